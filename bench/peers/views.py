"""One view per pattern; each issues one number and answers it as JSON."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from sequences import get_next_value

from bench.peers.models import ControlSequence, Invoice


@csrf_exempt
@require_POST
def select_for_update(request: HttpRequest) -> JsonResponse:
    value = ControlSequence.get_next_number("invoice")
    return JsonResponse({"number": f"INV-{value:07}", "value": value}, status=201)


@csrf_exempt
@require_POST
def django_sequences(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        value = get_next_value("invoice")
    return JsonResponse({"number": f"INV-{value:07}", "value": value}, status=201)


@csrf_exempt
@require_POST
def trigger(request: HttpRequest) -> JsonResponse:
    invoice = Invoice.objects.create()
    return JsonResponse({"number": invoice.invoice_number}, status=201)


def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ready"})
