// Byte rates from a session's running counters, measured between two looks.
import t from "tap";
import { ByteRates } from "../../src/observe/byte-rates.js";

t.test("the first look averages since the start; later ones measure since the previous look", async (t) => {
  const rates = new ByteRates();
  const session = { bytesSent: 10_000, bytesReceived: 5_000 };
  const start = new Date(0);
  t.same(rates.rate(session, start, 10_000), { sentPerSecond: 1_000, receivedPerSecond: 500 });
  session.bytesSent = 30_000;
  t.same(rates.rate(session, start, 12_000), { sentPerSecond: 10_000, receivedPerSecond: 0 });
  session.bytesSent = 1_000_000;
  t.same(
    rates.rate(session, start, 12_500),
    { sentPerSecond: 10_000, receivedPerSecond: 0 },
    "a look within a second repeats the last measurement",
  );
  const other = { bytesSent: 100, bytesReceived: 100 };
  t.same(
    rates.rate(other, new Date(12_400), 12_500),
    { sentPerSecond: 100, receivedPerSecond: 100 },
    "a session younger than a second is measured over one second",
  );
});
