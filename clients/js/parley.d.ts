// Types of parley.js, Parley's JavaScript client (docs/PROTOCOL.md).

export declare const Codes: Readonly<{
  BadRequest: 'bad_request'; UnknownType: 'unknown_type'; Binary: 'binary'; BadRoom: 'bad_room';
  NotInRoom: 'not_in_room'; TooManyRooms: 'too_many_rooms'; RoomLimit: 'room_limit'; BadNick: 'bad_nick';
  NickTaken: 'nick_taken'; UnknownNick: 'unknown_nick'; Empty: 'empty'; TooLong: 'too_long'; BadText: 'bad_text';
  RateLimited: 'rate_limited'; NotDelivered: 'not_delivered'; Unavailable: 'unavailable'; Forbidden: 'forbidden';
  ReadOnly: 'read_only'; Muted: 'muted'; BadToken: 'bad_token'; NotFound: 'not_found'; TooLate: 'too_late';
}>;
export type Code = (typeof Codes)[keyof typeof Codes];

export declare const CloseCodes: Readonly<{
  GoingAway: 1001; PolicyViolation: 1008; TryAgainLater: 1013; Disconnected: 4000; TokenExpired: 4001; Banned: 4003;
}>;

/** A request the server refused. */
export declare class ParleyError extends Error {
  constructor(code: string, message: string);
  readonly code: Code | 'banned';
}

export interface Limits {
  max_text_length: number; max_rooms: number; max_nick_length: number;
  rate_per_second: number; rate_burst: number; history_size: number; edit_window: number;
}
export interface Welcome { type: 'welcome'; id: number; nick: string; user?: string; expires?: number; sid?: string; room: string; epoch: number; limits: Limits }
export interface ReplyRef { seq: number; from: string; user?: string; excerpt: string }
export interface Message {
  type: 'message'; room: string; seq: number; from: string; user?: string; system?: boolean; text: string; ts: number;
  id?: string; sid?: string; reply?: ReplyRef; edited?: number; deleted?: number;
}
export interface Edit {
  type: 'edited' | 'deleted'; room: string; seq: number; edits?: number; deletes?: number; from: string; user?: string;
  sid?: string; system?: boolean; mod?: boolean; text: string; ts: number;
}
export interface ReactionSeen { emoji: string; count: number; who: string[] }
export interface Reactions { type: 'reactions'; room: string; seq?: number; messages: { seq: number; reactions: ReactionSeen[] }[] }
export interface Joined { type: 'join'; room: string; nick: string; count: number; members: string[]; truncated?: boolean; seq: number; epoch: number }
export interface Reset { type: 'reset'; room: string; epoch: number; seq: number }
export interface Left { type: 'leave'; room: string }
export interface Seen { type: 'seen'; room: string; nick: string; user: string; seq: number }
export interface Read { type: 'read'; room: string; seq: number; epoch: number }
export interface Presence { type: 'presence'; room: string; count: number; joined?: string[]; left?: string[]; renamed?: { from: string; to: string }[] }
export interface History { type: 'history'; room: string; messages: (Message | Edit)[]; gap?: boolean }
export interface DM { type: 'dm'; from: string; from_user?: string; to: string; to_user?: string; text: string; ts: number }
export interface Authed { type: 'auth'; user: string; expires: number }
export interface Typing { type: 'typing'; room?: string; nick: string }
export interface NickChanged { type: 'nick'; nick: string; old: string }
export interface ErrorEvent { type: 'error'; code: Code; message: string; request?: { type?: string; id?: string; room?: string } }
export interface RoomList { type: 'rooms'; q?: string; rooms: { room: string; count: number; private?: boolean }[]; next?: string }
export interface SearchResult { type: 'search'; room: string; q: string; messages: Message[]; before?: number }
export interface Disconnected { code: number; reason: string }
export interface Closed { error: Error | null }

export interface Events {
  welcome: Welcome; message: Message; edited: Edit; deleted: Edit; reactions: Reactions; join: Joined; reset: Reset;
  leave: Left; seen: Seen; read: Read; presence: Presence; history: History; dm: DM; auth: Authed; typing: Typing;
  nick: NickChanged; error: ErrorEvent; rooms: RoomList; search: SearchResult; disconnected: Disconnected; closed: Closed;
}

export interface Options {
  /** The server's chat endpoint(s), ws:// or wss://; several: a cluster's nodes, tried in turn. */
  url: string | string[];
  /** A guest's nick, kept across reconnections. */
  nick?: string;
  /** The room the server joins on connect. */
  room?: string;
  /** Signs in: called before each connection and before the token in force expires. */
  token?: () => Promise<string>;
  /** The WebSocket class: globalThis.WebSocket by default; on Node 20, the ws package's. */
  WebSocket?: unknown;
  /** ms before the first reconnection (250), doubling up to maxBackoff (10000), jittered. */
  minBackoff?: number;
  maxBackoff?: number;
  /** ms before expiry a fresh token is asked for (30000, or a third of its life if shorter). */
  refreshBefore?: number;
  /** Messages said and not yet stored (1000); past it say() rejects. */
  maxPending?: number;
}

export declare class ParleyClient {
  constructor(options: Options);
  readonly nick: string;
  readonly user: string;
  /** Why the client stopped (a ban), after 'closed'. */
  readonly error?: Error | null;
  on<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): () => void;
  /** Resolves at the first welcome; the client reconnects until close(). */
  connect(): Promise<void>;
  join(room: string): Promise<Joined>;
  leave(room: string): Promise<unknown>;
  /** Resolves once the room has the message; rejects with a ParleyError if refused for good. */
  say(room: string, text: string): Promise<void>;
  dm(to: string, text: string): Promise<DM>;
  setNick(nick: string): Promise<NickChanged>;
  /** Sends any other request now; false offline. */
  send(request: { type: string; [key: string]: unknown }): boolean;
  close(): Promise<void>;
}
