// Package replay recognises the client messages that build a session's
// state on the upstream (an opening such as connection_init or CONNECT,
// then subscriptions), keeps copies of those still live, and replays them
// on a new upstream connection after a reconnect (README "State replay on
// upstream reconnect"). It is pure logic: no I/O, no goroutines, no
// logging.
//
// # How a session drives it
//
// The session resolves its protocol once, after the first upstream
// handshake: [Resolve] with TETHER_REPLAY_PROTOCOL, the selected
// subprotocol and the request's raw query; under Auto, a session left at
// None also shows its first client message to [SignalRHandshake] (true:
// Opaque). [New] returns nil for None and Opaque: such sessions do not
// call this package at all (None keeps TETHER_REPLAY_FIRST and
// TETHER_REPLAY_DROP_REPLIES; Opaque closes the client with 1012 on an
// upstream loss).
//
//   - Each client data message (not the heartbeats the session consumes),
//     in order, sent or buffered: [State.FromClient] with its sequence
//     number. ErrStateFull: close the client with 1013. MQTT cuts packets
//     across messages: [State.AtBoundary] says whether the stream is
//     between packets, so that re-sends can start at a packet.
//   - Each upstream data message of the current connection that the
//     session would forward, in order: [State.FromUpstream]. Forward
//     Verdict.Msg unless Verdict.Drop; act on Verdict.Event.
//   - On a reconnect, once the new upgrade completed and before its first
//     message is read: [State.Replay] with the sequence number of the
//     first held message. Send Plan.Opening; when it is not empty, wait
//     for EventAccepted from FromUpstream, bounded by
//     TETHER_DIAL_TIMEOUT (no answer in time: a failed attempt, dial
//     again). Then send Plan.Rest, then the held messages (re-sent, then
//     buffered) except those Plan.Skip names, then go on as connected.
//     EventRejected before that (MQTT CONNACK with an error code, STOMP
//     ERROR, graphql-ws connection_error) is an upstream rejection: the
//     message reaches the client as it would without tether, and the
//     session ends as the upstream closes (a close while waiting, for
//     graphql-transport-ws, is the same rejection and the session's
//     business).
//
// After a replay, FromUpstream drops the replies to it (Verdict.Drop):
// the opening's answer (graphql connection_ack, STOMP CONNECTED, MQTT
// CONNACK) when the client had one already, STOMP RECEIPTs that replayed
// frames asked for and MQTT SUBACKs of replayed SUBSCRIBEs when the client
// had them already, and in json mode the first upstream message of each
// type in TETHER_REPLAY_JSON_REPLIES. When the client had not had the
// reply (the old connection died before it), it passes, so a client
// still waiting gets it. Everything else passes unchanged.
//
// Kept messages whose first message the old upstream did not provably
// receive are not replayed: they are among the held messages the session
// sends again, in their original order, and their replies reach the
// client. The opening is the exception (it must come first): when it is
// held too, Plan.Skip names its messages so that it is sent once (as it
// does for the held rest of a replayed MQTT packet cut across messages).
//
// # Concurrency
//
// One State per session. A State is not safe for concurrent use: the
// session calls it under its own lock, or from one goroutine at a time.
//
// # Cost
//
// A message that is not state costs a short scan and no allocation:
// JSON protocols read members up to "type" (servers write it before the
// payload), STOMP reads upstream frames only while an answer or receipt
// is owed, MQTT reads fixed headers and skips bodies by count. Keeping a
// state message copies it; nothing else allocates.
//
// # Protocols
//
//   - graphql-transport-ws: the latest connection_init; each subscribe
//     until a complete with its id either way, or an error for it from
//     the upstream.
//   - graphql-ws: connection_init; each start until a stop, or a complete
//     or error from the upstream (subscriptions-transport-ws clients drop
//     an operation on either). connection_terminate ends recognition.
//   - stomp: the CONNECT or STOMP frame; each SUBSCRIBE until an
//     UNSUBSCRIBE with its id (STOMP 1.0 without id: with its
//     destination). Frames may share a message; header values compare
//     as decoded (\c \n \r \\). A frame cut across messages is not
//     recognised. DISCONNECT ends recognition.
//   - mqtt: CONNECT; each topic filter of a SUBSCRIBE until an
//     UNSUBSCRIBE removes it or a later SUBSCRIBE replaces it (a
//     SUBSCRIBE that loses some filters is rebuilt with the others, same
//     packet id and properties). Replay sends one binary message per
//     packet. DISCONNECT ends recognition; a malformed packet or a text
//     message stops it for the session (see [State.Broken]). MQTT 5
//     enhanced authentication (AUTH) is not replayed. A SUBACK is matched
//     to a replayed SUBSCRIBE by packet id, once per replayed packet: a
//     client that reuses that id for a new SUBSCRIBE before the replayed
//     one is answered may lose that SUBACK instead (brokers answer in
//     order, so the replayed one normally comes first).
//   - json: messages whose "type" is in TETHER_REPLAY_JSON_KEEP, each
//     until a message whose "type" is in TETHER_REPLAY_JSON_END carries
//     the same TETHER_REPLAY_JSON_ID value (a string, compared as decoded,
//     or a number, compared as written), either way. A kept message
//     without that member stays for the session (the same bytes again are
//     kept once); one with the same type and id as a kept one replaces it.
//
// Input that does not parse is not state and passes untouched.
package replay
