package proxy

// SetResumeLookedUp makes f run in every resume between the token's
// lookup and its use (a test can hold one resume there while another
// completes).
func SetResumeLookedUp(s *Server, f func()) { s.lookedUp.Store(&f) }
