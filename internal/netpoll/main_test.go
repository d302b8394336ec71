package netpoll_test

import (
	"testing"

	"github.com/tether-proxy/tether/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
