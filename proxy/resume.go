package proxy

import (
	"net/http"

	"github.com/tether-proxy/tether/internal/resume"
	"github.com/tether-proxy/tether/session"
)

// resumeOn reports whether client session resume is on
// (TETHER_RESUME_WINDOW > 0).
func (s *Server) resumeOn() bool { return s.cfg.Session.Resume.Window > 0 }

// resumeRequest reads tether's query parameters (README "Client session
// resume") and removes them from r, so that no dial of the session, first
// or reconnect, forwards them; with resume off they are removed all the
// same and ignored.
func (s *Server) resumeRequest(r *http.Request) (req resume.Request, badAck bool) {
	req, rest, err := resume.Parse(r.URL.RawQuery)
	r.URL.RawQuery = rest
	if !s.resumeOn() {
		return resume.Request{}, false
	}
	return req, err != nil
}

// tryResume resumes the session whose token r presents (README "Client
// session resume") and reports whether it handled r: resumed, or failed
// once the client's upgrade was under way. false: refused (logged and
// counted, never the token), and the handshake goes on as a new
// resumable session.
//
// The token is used up (swapped for the next) before the session is
// claimed, so of several handshakes presenting one token only the one
// that wins the swap can touch the session: one that looked the token up
// before the winner swapped it can no longer claim the session and close
// the winner's new client leg. A claim refused afterwards (an ack out of
// range) puts the token back.
func (s *Server) tryResume(w http.ResponseWriter, r *http.Request, req resume.Request, badAck bool) bool {
	why := ""
	e, key, ok := s.tokens.Lookup(req.Token)
	if f := s.lookedUp.Load(); f != nil {
		(*f)()
	}
	var sess *session.Session
	if ok {
		s.mu.Lock()
		sess = e.sess
		draining := s.draining
		s.mu.Unlock()
		switch {
		case draining:
			why = "tether is draining"
		case sess == nil:
			why = "the session has not started"
		}
	}
	var token string
	var next resume.Key
	switch {
	case !ok:
		why = "unknown, used or expired token"
	case why != "":
	case badAck || !req.HasAck:
		why = "tether_ack missing or malformed"
	case !sess.SameOrigin(r.Header.Get("Origin")):
		why = "another Origin"
	default:
		token, next = resume.NewToken()
		if !s.swapToken(e, sess, key, next) {
			why = "token used meanwhile, or the session has ended"
		} else if err := sess.Claim(req.Ack); err != nil {
			s.swapToken(e, sess, next, key)
			why = err.Error()
		}
	}
	if why != "" {
		s.metrics.resumeRefused.Inc()
		s.log.Info("resume refused", "session", sessionID(sess), "why", why)
		return false
	}
	c, err := s.upgradeClient(w, r, sess.ID(), sess.Protocol(), nil)
	if err != nil {
		// The client never got the new token: the old one stays good.
		sess.Unclaim()
		s.swapToken(e, sess, next, key)
		s.log.Info("client upgrade failed", "session", sess.ID(), "err", err)
		return true
	}
	if err := sess.Attach(c.conn, c.buffered, c.deflate, token, req.Ack); err != nil {
		_ = c.conn.Close()
		s.log.Info("resume failed", "session", sess.ID(), "err", err)
	}
	return true
}

// swapToken makes next find e's session instead of old, unless the
// session has ended (its token is then deleted) or old is used.
func (s *Server) swapToken(e *entry, sess *session.Session, old, next resume.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.released || !s.tokens.Swap(old, next, e) {
		return false
	}
	sess.SetResumeKey(next)
	return true
}

// enableResume makes sess resumable with a new token, found in the
// table until the session ends.
func (s *Server) enableResume(e *entry, sess *session.Session, origin string) {
	token, key := resume.NewToken()
	s.tokens.Put(key, e)
	sess.EnableResume(token, key, origin)
}

// forgetToken removes the token of a resumable session that ends.
func (s *Server) forgetToken(sess *session.Session) {
	s.mu.Lock()
	s.tokens.Delete(sess.ResumeKey())
	s.mu.Unlock()
}

func sessionID(sess *session.Session) string {
	if sess == nil {
		return ""
	}
	return sess.ID()
}
