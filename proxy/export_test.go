package proxy

// SetResumeLookedUp makes f run in every resume between the token's
// lookup and its use (a test can hold one resume there while another
// completes).
func SetResumeLookedUp(s *Server, f func()) { s.lookedUp.Store(&f) }

// SetRelayed makes f run in every session start between the session's
// Relay and its listing (a test can hold a session there while it
// relays).
func SetRelayed(s *Server, f func()) { s.relayed.Store(&f) }
