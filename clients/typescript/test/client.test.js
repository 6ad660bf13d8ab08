// @ts-check
// Against a running service: DOCNUM_URL, an admin DOCNUM_API_KEY and DOCNUM_SERIES, a gapless
// series of that key's tenant (tests/test_typescript_client.py sets them up).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { createDocnumClient } from "../src/index.js";

const { DOCNUM_URL: baseUrl, DOCNUM_API_KEY: apiKey, DOCNUM_SERIES: series } = process.env;

test("a number is issued, read back and voided, and problems arrive typed", async () => {
  assert.ok(baseUrl && apiKey && series, "set DOCNUM_URL, DOCNUM_API_KEY and DOCNUM_SERIES");
  const docnum = createDocnumClient({ baseUrl, apiKey });
  const key = randomUUID();
  const issue = () =>
    docnum.POST("/series/{name}/next", {
      params: { path: { name: series }, header: { "Idempotency-Key": key } },
      body: { date: "2026-05-01" },
    });

  const issued = await issue();
  assert.equal(issued.response.status, 201, JSON.stringify(issued.error));
  const number = issued.data?.number;
  assert.ok(number);
  assert.equal(issued.data?.date, "2026-05-01");
  assert.equal(issued.response.headers.get("Location"), `/series/${series}/numbers/${number}`);

  const replayed = await issue();
  assert.equal(replayed.data?.number, number);
  assert.equal(replayed.response.headers.get("Idempotent-Replayed"), "true");

  const path = { name: series, number };
  const found = await docnum.GET("/series/{name}/numbers/{number}", { params: { path } });
  assert.equal(found.data?.status, "issued");
  assert.equal(found.data?.value, issued.data?.value);

  const voided = await docnum.POST("/series/{name}/numbers/{number}/void", {
    params: { path },
    body: { reason: "cancelled" },
  });
  assert.equal(voided.response.status, 200, JSON.stringify(voided.error));
  assert.equal(voided.data?.status, "voided");
  assert.equal(voided.data?.void_reason, "cancelled");

  const again = await docnum.POST("/series/{name}/numbers/{number}/void", {
    params: { path },
    body: { reason: "twice" },
  });
  assert.equal(again.response.status, 409);
  assert.equal(again.error?.type, "/problems/already-voided");
});
