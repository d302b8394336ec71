package replay

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/tether-proxy/tether/internal/jsonscan"
)

// Protocol selects the rules that recognise a session's state messages
// (TETHER_REPLAY_PROTOCOL).
type Protocol uint8

// The protocols. The zero value is Auto, the default.
const (
	Auto               Protocol = iota // pick by subprotocol and query: Resolve
	None                               // no recognition; TETHER_REPLAY_FIRST/_DROP_REPLIES apply
	GraphQLTransportWS                 // graphql-ws library (subprotocol graphql-transport-ws)
	GraphQLWS                          // subscriptions-transport-ws (subprotocol graphql-ws)
	STOMP                              // STOMP 1.0–1.2
	MQTT                               // MQTT 3.1.1 and 5
	JSON                               // JSON objects with a "type" member, rules from Config
	Opaque                             // server-created sessions: close the client with 1012 on an upstream loss
)

var protocolNames = [...]string{
	Auto:               "auto",
	None:               "none",
	GraphQLTransportWS: "graphql-transport-ws",
	GraphQLWS:          "graphql-ws",
	STOMP:              "stomp",
	MQTT:               "mqtt",
	JSON:               "json",
	Opaque:             "opaque",
}

// ParseProtocol parses a TETHER_REPLAY_PROTOCOL value (exactly, in lower
// case). The error does not name the variable: internal/envconfig's
// parser for this type adds it.
func ParseProtocol(s string) (Protocol, error) {
	for p, name := range protocolNames {
		if s == name {
			return Protocol(p), nil
		}
	}
	return Auto, fmt.Errorf("unknown protocol %q (want %s)", s, strings.Join(protocolNames[:], ", "))
}

// String returns the name ParseProtocol accepts, or "Protocol(n)".
func (p Protocol) String() string {
	if p.valid() {
		return protocolNames[p]
	}
	return "Protocol(" + strconv.Itoa(int(p)) + ")"
}

func (p Protocol) valid() bool { return int(p) < len(protocolNames) }

// Recognised reports whether p keeps state for replay (it has a State).
func (p Protocol) Recognised() bool { return p >= GraphQLTransportWS && p <= JSON }

// Strict reports whether a message the protocol's peers did not send
// breaks p's stream, so that tether must add none (README "Heartbeats"):
// an MQTT peer reads every message as bytes of its packet stream (a JSON
// ping's '{' is a PUBCOMP header with bad flags: mqtt.js fails with
// "Invalid header flag bits, must be 0x0 for pubcomp packet"), and a STOMP
// peer reads a text message without a NUL as the start of the next frame,
// which it then drops as unknown; a subscriptions-transport-ws client
// (graphql-ws) throws "Invalid message type!" for every type it does not
// know, in its message handler.
func (p Protocol) Strict() bool { return p == MQTT || p == STOMP || p == GraphQLWS }

// Resolve turns the configured protocol into the session's: anything but
// Auto is returned as is. Auto picks by the subprotocol the upstream
// selected (graphql-transport-ws, graphql-ws, v10.stomp/v11.stomp/
// v12.stomp, mqtt/mqttv3.1), then Opaque when the request's raw query has
// an EIO parameter (Engine.IO, socket.io), else None. A session that
// resolves to None under Auto must still show its first client message to
// SignalRHandshake.
func Resolve(configured Protocol, subprotocol, rawQuery string) Protocol {
	if configured != Auto {
		return configured
	}
	switch subprotocol {
	case "graphql-transport-ws":
		return GraphQLTransportWS
	case "graphql-ws":
		return GraphQLWS
	case "v10.stomp", "v11.stomp", "v12.stomp":
		return STOMP
	case "mqtt", "mqttv3.1":
		return MQTT
	}
	for q := rawQuery; q != ""; {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if k, _, _ := strings.Cut(kv, "="); k == "EIO" {
			return Opaque
		}
	}
	return None
}

// SignalRHandshake reports whether p, a session's first client message,
// is a SignalR handshake: a JSON object with a "protocol" member, ended by
// the record separator 0x1E. With Auto resolved to None, such a session is
// Opaque.
func SignalRHandshake(p []byte) bool {
	body, ok := bytes.CutSuffix(p, []byte{0x1e})
	if !ok {
		return false
	}
	it := jsonscan.NewMembers(body)
	found := false
	for {
		k, _, ok := it.Next()
		if !ok {
			break
		}
		found = found || jsonscan.StringEqual(k, "protocol")
	}
	return found && it.Valid()
}
