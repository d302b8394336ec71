package resume

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// Prefix starts the name of every query parameter tether owns.
const Prefix = "tether_"

// Request is what a handshake asks of resume.
type Request struct {
	New    bool   // tether_resume=new: start a resumable session
	Token  string // tether_resume=<token>: resume that session
	Ack    uint64 // tether_ack: data messages the client has received
	HasAck bool
}

// Asked reports whether the client asked for a resumable session at all.
func (r Request) Asked() bool { return r.New || r.Token != "" }

// ErrBadAck is a tether_ack that is not a decimal count.
var ErrBadAck = errors.New("tether_ack is not a count")

// Parse reads tether's parameters from a raw query and returns the query
// without them (every parameter whose decoded name begins with Prefix is
// removed; the others keep their order and their exact bytes, so the
// upstream sees the query the client sent, less tether's part). A
// malformed tether_ack is reported with the rest still parsed: the
// handshake treats it as a resume that cannot be honoured.
func Parse(rawQuery string) (req Request, rest string, err error) {
	if !strings.Contains(rawQuery, "tether") && !strings.Contains(rawQuery, "%") {
		return req, rawQuery, nil // the common case: nothing to do, no allocation
	}
	var b strings.Builder
	for part := range strings.SplitSeq(rawQuery, "&") {
		name, value, _ := strings.Cut(part, "=")
		dn, derr := url.QueryUnescape(name)
		if derr != nil {
			dn = name // undecodable: judged by its raw bytes
		}
		if !strings.HasPrefix(dn, Prefix) && !strings.HasPrefix(name, Prefix) {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(part)
			continue
		}
		v, verr := url.QueryUnescape(value)
		if verr != nil {
			v = ""
		}
		switch dn {
		case "tether_resume":
			if v == "new" {
				req.New, req.Token = true, ""
			} else if v != "" {
				req.New, req.Token = false, v
			}
		case "tether_ack":
			n, perr := strconv.ParseUint(v, 10, 64)
			if perr != nil {
				err = ErrBadAck
				continue
			}
			req.Ack, req.HasAck = n, true
		}
	}
	return req, b.String(), err
}
