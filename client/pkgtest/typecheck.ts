// Type-checked by `go test ./client/ -run TestNpmPackage` (tsc --noEmit)
// in a fresh project that installed the packed @tether-proxy/client: the
// package's declarations resolve by its name and describe its API.
import TetherClientDefault, {
  TetherClient,
  Status,
  CloseCode,
  UpstreamStatus,
  shouldReconnect,
  backoffDelay,
  defaults,
  type StatusEvent,
  type TetherOptions,
  type UpstreamEvent,
  type PongEvent,
} from "@tether-proxy/client";

const options: TetherOptions = { pingInterval: 15000, maxAttempts: 10, binaryType: "arraybuffer" };
const client: TetherClient = new TetherClientDefault(() => "wss://app.example.com/ws", options);
client.on("status", (e: StatusEvent) => {
  if (e.status === "open") {
    const protocol: string = e.protocol;
    void protocol;
  }
});
const off: () => void = client.on("upstream", (e: UpstreamEvent) => {
  const s: "reconnecting" | "connected" | "unavailable" = e.status;
  void s;
});
off();
client.on("pong", (e: PongEvent) => void (e.rtt ?? 0).toFixed(1));
const queued: boolean = client.send(new Uint8Array([1, 2, 3]));
const normal: 1000 = CloseCode.NORMAL;
const open: "open" = Status.OPEN;
const unavailable: "unavailable" = UpstreamStatus.UNAVAILABLE;
const retry: boolean = shouldReconnect({ code: 1012, reason: "", upstreamUnavailable: false });
const delay: number = backoffDelay(2, defaults.initialDelay, defaults.maxDelay, Math.random);
void [queued, normal, open, unavailable, retry, delay];

// The declarations are precise, not `any`:
// @ts-expect-error pingInterval is a number of milliseconds
new TetherClient("wss://app.example.com/ws", { pingInterval: "15s" });
// @ts-expect-error there is no such event
client.on("opened", () => {});
// @ts-expect-error status is read-only
client.status = "open";
