// Type declarations for tether.js, the browser client for tether.

/** Close codes the client uses or interprets. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  ABNORMAL: 1006;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  BAD_GATEWAY: 1014;
  /** drop(): the client killed its own socket on purpose. */
  CLIENT_DROP: 3000;
  /** No pong from tether within pongTimeout. */
  CLIENT_HEARTBEAT_TIMEOUT: 3008;
}>;

export type StatusName = "idle" | "connecting" | "open" | "reconnecting" | "offline" | "closed";
export declare const Status: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  OFFLINE: "offline";
  CLOSED: "closed";
}>;

export type UpstreamStatusName = "reconnecting" | "connected" | "unavailable";
export declare const UpstreamStatus: Readonly<{
  RECONNECTING: "reconnecting";
  CONNECTED: "connected";
  UNAVAILABLE: "unavailable";
}>;

/** Largest text message that can be a JSON heartbeat (4096 bytes). */
export declare const MAX_HEARTBEAT_BYTES: 4096;

/** A JSON heartbeat: an object with a string "type" and any extra members. */
export interface HeartbeatMessage {
  type: string;
  [member: string]: unknown;
}

/** What the default close policy, and a custom shouldReconnect, are given. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** tether sent {"type":"upstream","status":"unavailable"} on this connection. */
  upstreamUnavailable: boolean;
}

/** The minimal WebSocket the client needs (the browser's, or a fake in tests). */
export interface WebSocketLike {
  readonly protocol?: string;
  binaryType?: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: unknown): void;
  close(code?: number, reason?: string): void;
}

export interface TetherOptions {
  /** Subprotocols offered to the server. Default: none. */
  protocols?: string | string[];
  /** WebSocket binaryType ("blob" or "arraybuffer"). Default: the browser's ("blob"). */
  binaryType?: "blob" | "arraybuffer";
  /** Milliseconds between the client's own JSON pings; 0 disables pings and the pong timeout. Default 15000. */
  pingInterval?: number;
  /** Milliseconds without a pong after which the connection counts as dead. Default 3 × pingInterval. */
  pongTimeout?: number;
  /** First backoff step in ms. Default 250. */
  initialDelay?: number;
  /** Backoff cap in ms. Default 10000. */
  maxDelay?: number;
  /** Reconnect attempts per outage before going offline; 0 = unlimited. Default 10. */
  maxAttempts?: number;
  /** Messages held while not open; send() returns false beyond it. Default 1024. */
  maxQueue?: number;
  /** The JSON ping, as tether's TETHER_PING_MESSAGE. Default {"type":"ping"}. */
  pingMessage?: HeartbeatMessage;
  /** The JSON pong, as tether's TETHER_PONG_MESSAGE. Default {"type":"pong"}. */
  pongMessage?: HeartbeatMessage;
  /** "type" of tether's upstream status messages. Default "upstream". */
  upstreamType?: string;
  /** Close policy: whether to reconnect after the server closed with this code. Default: shouldReconnect. */
  shouldReconnect?: (close: CloseInfo) => boolean;
  /**
   * Ask tether for a resumable session (README "Client session resume"):
   * after a loss that was not close(), the session is resumed with
   * nothing lost or doubled either way. Default true.
   */
  resume?: boolean;
  /**
   * When a resume is refused (the session is gone), re-send the messages
   * tether never confirmed into the new session, before the queue.
   * Default false: they are dropped, and the "session" event carries them.
   */
  resendUnconfirmed?: boolean;
  /** Acknowledge tether's messages after this many. Default 32. */
  ackEvery?: number;
  /** ...or this many ms after the first unacknowledged one. Default 100. */
  ackDelay?: number;

  // Injection points, for tests.
  /** WebSocket class. Default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  /** Jitter source, a number in [0, 1). Default Math.random. */
  random?: () => number;
  /** Clock in ms for round-trip times. Default performance.now. */
  now?: () => number;
}

export type StatusEvent =
  | { status: "connecting"; attempt: number }
  | { status: "open"; attempt: number; flushed: number; protocol: string }
  | { status: "reconnecting"; attempt: number; maxAttempts: number; delay: number; code: number; reason: string; wasClean: boolean }
  | { status: "offline"; attempts: number; code: number; reason: string; wasClean: boolean }
  | { status: "closed"; code: number; reason: string; byClient: boolean; wasClean?: boolean };

export interface UpstreamEvent {
  status: UpstreamStatusName;
  /** tether's attempt number, for "reconnecting". */
  attempt?: number;
  /** true when inferred from the connection opening rather than sent by tether. */
  implicit: boolean;
}

export interface MessageEvent {
  /** string for text messages; Blob or ArrayBuffer for binary ones. */
  data: unknown;
}

export type PingEvent =
  /** tether pinged the client, which answered with reply. */
  | { from: "server"; message: HeartbeatMessage; reply: HeartbeatMessage; at: number }
  /** The client sent its ping number id. */
  | { from: "client"; id: number; at: number };

export interface PongEvent {
  from: "server";
  /** id of the client's ping this answers, if any. */
  id: unknown;
  /** Round trip in ms, or null when the pong matches no outstanding ping. */
  rtt: number | null;
  message: HeartbeatMessage;
  at: number;
}

/** tether's tether.session message was handled (resumable sessions). */
export interface SessionEvent {
  /** The session was resumed: nothing was lost either way. */
  resumed: boolean;
  /** A resume was asked for and refused: the session, and its state at the backend, are gone. */
  refused: boolean;
  /** Messages sent again because tether had not received them (resumed). */
  resent: number;
  /** On a refusal: the messages sent that tether never confirmed (dropped unless resendUnconfirmed). */
  unconfirmed: unknown[];
}

export interface TetherEventMap {
  session: SessionEvent;
  status: StatusEvent;
  upstream: UpstreamEvent;
  message: MessageEvent;
  ping: PingEvent;
  pong: PongEvent;
}

/** The default close policy: false for 1000, 1008, 4000-4999, and 1014 after tether gave up. */
export declare function shouldReconnect(close: CloseInfo): boolean;

/** Delay before reconnect attempt n: round(random() × min(maxDelay, initialDelay × 2^n)). */
export declare function backoffDelay(n: number, initialDelay: number, maxDelay: number, random: () => number): number;

export declare const defaults: Readonly<Required<Omit<TetherOptions,
  "WebSocket" | "setTimeout" | "clearTimeout" | "random" | "now" | "protocols" | "binaryType" | "pongTimeout" | "shouldReconnect">>>;

/**
 * A WebSocket that keeps itself connected through tether. Not connected
 * until connect() is called, so listeners can be added first.
 */
export declare class TetherClient {
  constructor(url: string | (() => string), options?: TetherOptions);
  readonly status: StatusName;
  readonly upstream: UpstreamStatusName | null;
  /** Messages in the send queue. */
  readonly queued: number;
  /** Number of the current reconnect attempt during an outage, else 0. */
  readonly attempt: number;
  readonly socket: WebSocketLike | null;
  /** Whether the current session is resumable (tether sent its token). */
  readonly resumable: boolean;
  /** Data messages sent that tether has not acknowledged yet. */
  readonly unconfirmed: number;

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof TetherEventMap>(type: K, listener: (detail: TetherEventMap[K]) => void): () => void;
  off<K extends keyof TetherEventMap>(type: K, listener: (detail: TetherEventMap[K]) => void): void;

  /** Opens the first connection (only from "idle"). */
  connect(): void;
  /** Starts over now, with a fresh attempt counter. Returns false after close(). */
  reconnect(): boolean;
  /**
   * Sends now when open, otherwise queues (flushed in order on the next
   * open). Returns false, without throwing, when the queue is full or after
   * close().
   */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean;
  /** Closes with code (default 1000) and never reconnects afterwards. */
  close(code?: number, reason?: string): void;
  /**
   * Kills the socket as a network failure would and reconnects by itself:
   * on a resumable session without a Close (a Close would end the session
   * at tether) and the session resumes; otherwise with code (default 3000).
   */
  drop(code?: number, reason?: string): boolean;
}

export default TetherClient;
