import { test } from "node:test";
import assert from "node:assert/strict";

import { duration, money, sampleKey, size, when } from "../../web/format.js";

test("money: dollars with cents, a dash for what is not a number", () => {
  assert.equal(money(1.2), "$1.20");
  assert.equal(money(0), "$0.00");
  assert.equal(money(null), "–");
  assert.equal(money(NaN), "–");
  assert.equal(money(Infinity), "–");
});

test("duration: seconds, minutes and hours, never negative", () => {
  assert.equal(duration(5), "5s");
  assert.equal(duration(65), "1m 05s");
  assert.equal(duration(3600), "1h 00m");
  assert.equal(duration(3 * 3600 + 7 * 60 + 59), "3h 07m");
  assert.equal(duration(-4), "0s");
  assert.equal(duration(undefined), "–");
});

test("when: nothing for no time", () => {
  assert.equal(when(0), "");
  assert.equal(when("yesterday"), "");
  assert.notEqual(when(1_700_000_000), "");
});

test("size: kilobytes rounded up, megabytes with one decimal", () => {
  assert.equal(size(1), "1 KB");
  assert.equal(size(1500), "2 KB");
  assert.equal(size(2_500_000), "2.5 MB");
});

test("sampleKey: kohya's step and epoch names, ours, and anything else last", () => {
  assert.deepEqual(sampleKey("cat_000250_01_20250101120000.png"), { key: "step 250 · prompt 1", order: 25001 });
  assert.deepEqual(sampleKey("cat_e000002_00_20250101120000.png"), { key: "epoch 2 · prompt 0", order: 200 });
  assert.deepEqual(sampleKey("s_0250.png"), { key: "step 250", order: 25000 });
  assert.deepEqual(sampleKey("notes"), { key: "notes", order: Infinity });
});
