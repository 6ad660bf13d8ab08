from django.urls import path

from bench.peers import views

urlpatterns = [
    path("select_for_update", views.select_for_update),
    path("django-sequences", views.django_sequences),
    path("trigger", views.trigger),
    path("readyz", views.ready),
]
