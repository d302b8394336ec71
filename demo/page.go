package demo

import (
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tether-proxy/tether/client"
)

// PageConfig is what the demo page reads from /config.json.
type PageConfig struct {
	Tether TetherEndpoint `json:"tether"`
	// Client holds TetherClient options (milliseconds and counts); URL
	// query parameters of the page override them.
	Client ClientOptions `json:"client"`
}

// TetherEndpoint says where the page connects. An empty Host means the
// page's own host name (tether listens on every interface).
type TetherEndpoint struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	Path string `json:"path"`
}

// ClientOptions are the tether.js options the demo sets.
type ClientOptions struct {
	PingInterval int `json:"pingInterval"` // ms
	InitialDelay int `json:"initialDelay"` // ms
	MaxDelay     int `json:"maxDelay"`     // ms
	MaxAttempts  int `json:"maxAttempts"`
}

// pageFiles are the embedded files served as they are, with their types.
var pageFiles = map[string]string{
	"demo.css":    "text/css; charset=utf-8",
	"demo.js":     "text/javascript; charset=utf-8",
	"tether.js":   "text/javascript; charset=utf-8",
	"tether.d.ts": "text/plain; charset=utf-8", // not video/mp2t, as .ts maps to
}

// pageHandler serves the demo page, the client, /config.json and the
// backend controls:
//
//	GET  /                     the page (demo.html)
//	GET  /demo.js, /demo.css, /tether.js, /tether.d.ts
//	GET  /config.json          PageConfig
//	GET  /api/backend          BackendStats
//	POST /api/backend/restart  restart the backend (down for pause), answers at once
//	POST /api/backend/stop     stop the backend and keep it down
//	POST /api/backend/start    start a stopped backend
func pageHandler(cfg PageConfig, backend *Backend, pause time.Duration) http.Handler {
	mux := http.NewServeMux()
	serveFile := func(name, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, client.Files, name)
		}
	}
	mux.HandleFunc("GET /{$}", serveFile("demo.html", "text/html; charset=utf-8"))
	for name, typ := range pageFiles {
		mux.HandleFunc("GET /"+name, serveFile(name, typ))
	}
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, cfg)
	})
	mux.HandleFunc("GET /api/backend", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, backend.Stats())
	})
	mux.HandleFunc("POST /api/backend/restart", sameOrigin(func(w http.ResponseWriter, r *http.Request) {
		backend.RestartAsync(pause)
		writeJSON(w, http.StatusAccepted, map[string]string{"message": "restarting, down for " + pause.String()})
	}))
	mux.HandleFunc("POST /api/backend/stop", sameOrigin(func(w http.ResponseWriter, r *http.Request) {
		backend.Stop()
		writeJSON(w, http.StatusOK, map[string]string{"message": "stopped"})
	}))
	mux.HandleFunc("POST /api/backend/start", sameOrigin(func(w http.ResponseWriter, r *http.Request) {
		if err := backend.Start(); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"message": "running"})
	}))
	return mux
}

// sameOrigin refuses requests that a page of another origin made (a
// browser always sends Origin on a cross-origin POST), so other sites
// cannot restart the demo's backend.
func sameOrigin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || u.Host != r.Host {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin request"})
				return
			}
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// endpointFor returns the TetherEndpoint for a listener bound to addr.
func endpointFor(addr net.Addr) TetherEndpoint {
	ep := TetherEndpoint{Path: "/"}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ep
	}
	ep.Port, _ = strconv.Atoi(port)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		ep.Host = host
		if ip.To4() == nil {
			ep.Host = "[" + host + "]"
		}
	}
	return ep
}

// checkFiles reports a missing embedded file at start rather than as a 404.
func checkFiles() error {
	for _, name := range []string{"demo.html", "demo.css", "demo.js", "tether.js", "tether.d.ts"} {
		if _, err := fs.Stat(client.Files, name); err != nil {
			return err
		}
	}
	return nil
}
