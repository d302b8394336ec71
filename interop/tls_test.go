package interop

import (
	"testing"

	"github.com/tether-proxy/tether/internal/testkit"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into a temporary directory; the certificate file is also the CA file
// the peers trust.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = testkit.SelfSigned(t)
	return certFile, keyFile
}
