/**
 * The whitepaper §6 timer state machine as a pure function of (state, event, now): it updates
 * the deadlines in `state` (in place, so the data path allocates nothing) and returns what the
 * device must do as a bit set of Action flags. The device owns one real timer per peer and
 * arms it at nextDeadline(state); when it fires it calls expire(). Times are milliseconds on
 * the caller's monotonic clock; jitter (0..REKEY_TIMEOUT_JITTER_MAX) is drawn by the caller.
 */
import {
  KEEPALIVE_TIMEOUT,
  MAX_TIMER_HANDSHAKES,
  REKEY_TIMEOUT,
  ZERO_KEYS_AFTER,
} from './constants.ts';

export const Action = {
  None: 0,
  /** Create and send a handshake initiation (then report 'handshake-initiated'). */
  SendInitiation: 1,
  /** Send an empty transport message. */
  SendKeepalive: 2,
  /** Wipe every keypair and the in-progress handshake. */
  ZeroKeys: 4,
  /** Drop the packets staged for the handshake that gave up. */
  ClearStaged: 8,
  /** Forget the local source address used to reach the peer (it may be gone). */
  ClearEndpointSource: 16,
  /** A deadline moved earlier than any before it: re-arm the real timer at nextDeadline(). */
  Rearm: 32,
} as const;

export type TimerEvent =
  /** A transport packet with a payload was sent. */
  | 'data-sent'
  /** A transport packet with a payload was received and authenticated. */
  | 'data-received'
  /** Any authenticated packet (handshake, data, keepalive) was sent. */
  | 'authenticated-sent'
  /** Any authenticated packet was received. */
  | 'authenticated-received'
  /** Any authenticated packet was sent or received (persistent keepalive restarts). */
  | 'authenticated-traversal'
  /** An initiation was just sent. */
  | 'handshake-initiated'
  /** A handshake response was received and a session is established (initiator side). */
  | 'handshake-complete'
  /** Transport keys were derived (either side). */
  | 'session-derived'
  /** The data path or a rekey rule wants a handshake (not a retransmission). */
  | 'want-handshake'
  /** The peer is removed or the device goes down: cancel everything. */
  | 'stop';

export interface TimerState {
  retransmitHandshakeAt: number;
  sendKeepaliveAt: number;
  newHandshakeAt: number;
  zeroKeysAt: number;
  persistentKeepaliveAt: number;
  needAnotherKeepalive: boolean;
  handshakeAttempts: number;
  lastInitiationSentAt: number;
  /** Persistent keepalive interval in ms; 0 is off. */
  persistentKeepaliveInterval: number;
  /** When the caller's real timer is due (Infinity: not armed); kept here so checking it passes no number around. */
  armedAt: number;
}

const NEVER = Infinity;

export function createTimerState(persistentKeepaliveInterval = 0): TimerState {
  return {
    retransmitHandshakeAt: NEVER,
    sendKeepaliveAt: NEVER,
    newHandshakeAt: NEVER,
    zeroKeysAt: NEVER,
    persistentKeepaliveAt: NEVER,
    needAnotherKeepalive: false,
    handshakeAttempts: 0,
    lastInitiationSentAt: -Infinity,
    persistentKeepaliveInterval,
    armedAt: NEVER,
  };
}

/** At most one initiation per REKEY_TIMEOUT, retries included. */
function initiationAllowed(state: TimerState, now: number): boolean {
  return now - state.lastInitiationSentAt >= REKEY_TIMEOUT;
}

/**
 * Applies one event. Returns the actions it calls for, with Rearm when it set a deadline
 * earlier than the one it replaced — so the data path, which reports several events per packet,
 * only touches the real timer when a deadline actually moved forward.
 */
export function onEvent(state: TimerState, event: TimerEvent, now: number, jitter = 0): number {
  switch (event) {
    case 'data-sent':
      if (state.newHandshakeAt !== NEVER) return Action.None;
      state.newHandshakeAt = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter;
      return Action.Rearm;
    case 'data-received':
      if (state.sendKeepaliveAt === NEVER) {
        state.sendKeepaliveAt = now + KEEPALIVE_TIMEOUT;
        return Action.Rearm;
      }
      state.needAnotherKeepalive = true;
      return Action.None;
    case 'authenticated-sent':
      state.sendKeepaliveAt = NEVER;
      return Action.None;
    case 'authenticated-received':
      state.newHandshakeAt = NEVER;
      return Action.None;
    case 'authenticated-traversal': {
      if (state.persistentKeepaliveInterval <= 0) return Action.None;
      const at = now + state.persistentKeepaliveInterval;
      const earlier = at < state.persistentKeepaliveAt;
      state.persistentKeepaliveAt = at;
      return earlier ? Action.Rearm : Action.None;
    }
    case 'handshake-initiated': {
      const at = now + REKEY_TIMEOUT + jitter;
      const earlier = at < state.retransmitHandshakeAt;
      state.lastInitiationSentAt = now;
      state.retransmitHandshakeAt = at;
      return earlier ? Action.Rearm : Action.None;
    }
    case 'handshake-complete':
      state.retransmitHandshakeAt = NEVER;
      state.handshakeAttempts = 0;
      return Action.None;
    case 'session-derived': {
      const at = now + ZERO_KEYS_AFTER;
      const earlier = at < state.zeroKeysAt;
      state.zeroKeysAt = at;
      return earlier ? Action.Rearm : Action.None;
    }
    case 'want-handshake':
      state.handshakeAttempts = 0;
      return initiationAllowed(state, now) ? Action.SendInitiation : Action.None;
    case 'stop':
      state.retransmitHandshakeAt = NEVER;
      state.sendKeepaliveAt = NEVER;
      state.newHandshakeAt = NEVER;
      state.zeroKeysAt = NEVER;
      state.persistentKeepaliveAt = NEVER;
      state.needAnotherKeepalive = false;
      state.handshakeAttempts = 0;
      return Action.None;
  }
}

/** Changes the persistent keepalive interval; a newly enabled one sends a keepalive at once. */
export function setPersistentKeepalive(state: TimerState, intervalMs: number, now: number): number {
  const wasOff = state.persistentKeepaliveInterval === 0;
  state.persistentKeepaliveInterval = intervalMs;
  if (intervalMs === 0) {
    state.persistentKeepaliveAt = NEVER;
    return Action.None;
  }
  state.persistentKeepaliveAt = now + intervalMs;
  return wasOff ? Action.SendKeepalive : Action.None;
}

/** Runs every deadline that has passed at `now` and returns the union of their actions. */
export function expire(state: TimerState, now: number, jitter = 0): number {
  let actions: number = Action.None;
  if (state.retransmitHandshakeAt <= now) {
    state.retransmitHandshakeAt = NEVER;
    if (state.handshakeAttempts > MAX_TIMER_HANDSHAKES) {
      // Gave up after REKEY_ATTEMPT_TIME: drop what waited, and wipe keys later if not already due.
      actions |= Action.ClearStaged;
      state.sendKeepaliveAt = NEVER;
      if (state.zeroKeysAt === NEVER) state.zeroKeysAt = now + ZERO_KEYS_AFTER;
    } else {
      state.handshakeAttempts++;
      actions |= Action.ClearEndpointSource;
      if (initiationAllowed(state, now)) actions |= Action.SendInitiation;
      else state.retransmitHandshakeAt = state.lastInitiationSentAt + REKEY_TIMEOUT + jitter;
    }
  }
  if (state.sendKeepaliveAt <= now) {
    state.sendKeepaliveAt = NEVER;
    actions |= Action.SendKeepalive;
    if (state.needAnotherKeepalive) {
      state.needAnotherKeepalive = false;
      state.sendKeepaliveAt = now + KEEPALIVE_TIMEOUT;
    }
  }
  if (state.newHandshakeAt <= now) {
    // We sent data and heard nothing back for KEEPALIVE + REKEY_TIMEOUT: the session may be dead.
    state.newHandshakeAt = NEVER;
    actions |= Action.ClearEndpointSource | onEvent(state, 'want-handshake', now);
  }
  if (state.zeroKeysAt <= now) {
    state.zeroKeysAt = NEVER;
    actions |= Action.ZeroKeys;
  }
  if (state.persistentKeepaliveAt <= now) {
    state.persistentKeepaliveAt = NEVER;
    if (state.persistentKeepaliveInterval > 0) actions |= Action.SendKeepalive;
  }
  return actions;
}

/**
 * Whether some pending deadline is earlier than the one the real timer is armed for — i.e.
 * nextDeadline(state) < state.armedAt, answered without producing a number, so the check the
 * data path makes per batch allocates nothing.
 */
export function needsRearm(state: TimerState): boolean {
  const t = state.armedAt;
  return (
    state.retransmitHandshakeAt < t ||
    state.sendKeepaliveAt < t ||
    state.newHandshakeAt < t ||
    state.zeroKeysAt < t ||
    state.persistentKeepaliveAt < t
  );
}

/** The earliest pending deadline, or Infinity when none is. */
export function nextDeadline(state: TimerState): number {
  return Math.min(
    state.retransmitHandshakeAt,
    state.sendKeepaliveAt,
    state.newHandshakeAt,
    state.zeroKeysAt,
    state.persistentKeepaliveAt,
  );
}
