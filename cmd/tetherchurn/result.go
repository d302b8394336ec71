package main

import (
	"fmt"
	"io"
	"strings"
)

// Result is one run: the -json line, and the human report.
type Result struct {
	Sessions      int      `json:"sessions"`
	Interval      string   `json:"interval"`      // gap between one session's messages (mean)
	Push          string   `json:"push_interval"` // gap between a backend's pushes to one connection
	Size          int      `json:"padding_bytes"`
	Downtime      string   `json:"downtime"`
	Signal        string   `json:"signal"`
	ReconnectRate int      `json:"reconnect_rate"`
	TetherEnv     []string `json:"tether_env"`

	RSSIdleMiB   float64 `json:"tether_rss_before_sessions_mib"`
	RSSLoadedMiB float64 `json:"tether_rss_with_sessions_mib"`
	// tether's CPU during the warm-up: steady traffic, no storm.
	SteadyCPUPercent float64 `json:"tether_steady_cpu_percent"`

	Scenarios []ScenarioResult `json:"scenarios"`

	Survived             int      `json:"survived"`         // open at the end and relayed a final round trip
	ClosedByTether       int      `json:"closed_by_tether"` // client legs that ended without the client asking
	Sent                 int64    `json:"client_messages_sent"`
	Receipts             int64    `json:"backend_receipts"` // duplicates included
	Lost                 int64    `json:"client_messages_lost"`
	LostSessions         int      `json:"sessions_with_loss"`
	Duplicates           int64    `json:"duplicates"`
	Pushes               int64    `json:"pushes_received"` // backend → client messages that arrived
	BufferOverflows      int64    `json:"buffer_overflows"`
	TetherSessionsActive int      `json:"tether_sessions_active_at_end"`
	TetherExit           int      `json:"tether_exit_code"` // on SIGTERM at the end (-1: did not exit)
	LogProblems          int      `json:"tether_log_problems"`
	Violations           []string `json:"violations,omitempty"`
	OK                   bool     `json:"ok"`
}

// ScenarioResult is one scenario: all backends at once, or a rolling
// restart.
type ScenarioResult struct {
	Name     string       `json:"name"`
	Signal   string       `json:"signal"`
	Downtime string       `json:"downtime"`
	Steps    []StepResult `json:"steps"`

	// The storm: from the first kill until every cut-off session relayed
	// again after the last step.
	StormSeconds       float64 `json:"storm_seconds"`
	TetherCPUSeconds   float64 `json:"tether_cpu_seconds"`
	TetherCPUPercent   float64 `json:"tether_cpu_percent"` // of one core, over the storm
	TetherRSSBeforeMiB float64 `json:"tether_rss_before_mib"`
	TetherPeakRSSMiB   float64 `json:"tether_peak_rss_mib"` // sampled every 100 ms

	// Upstream dials: started (tether's log line before each dial, in 100
	// ms and 1 s bins from the first kill), finished (tether's reconnect
	// counters, scraped every 100 ms: a successful dial counts when its
	// upgrade completes), and the connections the backends accepted.
	DialStarts          int     `json:"dial_starts"`
	PeakDialStarts100ms int     `json:"peak_dial_starts_in_100ms"`
	PeakDialStarts1s    int     `json:"peak_dial_starts_in_1s"`
	PeakDials100ms      float64 `json:"peak_dials_finished_per_s_100ms"`
	PeakDials1s         float64 `json:"peak_dials_finished_per_s_1s"`
	Accepts             int     `json:"accepts"`
	PeakAccepts100ms    int     `json:"peak_accepts_in_100ms"`
	PeakAccepts1s       int     `json:"peak_accepts_in_1s"`
	ReconnectedSessions int     `json:"reconnected_sessions"`
	ReconnectsOK        int64   `json:"tether_reconnects_success"`
	ReconnectsFailed    int64   `json:"tether_reconnects_failure"`
	Resent              int64   `json:"tether_resent_messages"`

	Lost                     int64   `json:"client_messages_lost"` // sent since the previous scenario, never received
	LostSessions             int     `json:"sessions_with_loss"`
	Duplicates               int64   `json:"duplicates"`
	DuplicatesPerReconnected float64 `json:"duplicates_per_reconnected_session"`
	MaxDuplicatesOneSession  int     `json:"max_duplicates_one_session"`
	ClosedByTetherSoFar      int     `json:"closed_by_tether_so_far"`
}

// StepResult is one kill and restart.
type StepResult struct {
	Backends              []int   `json:"backends"` // 1-based
	Affected              int     `json:"affected_sessions"`
	ExitedSeconds         float64 `json:"exited_s"`    // from the signal until the processes were gone
	RestartedAfterSeconds float64 `json:"restarted_s"` // from the signal until the restart began
	Recovered             int     `json:"recovered"`
	NotRecovered          int     `json:"not_recovered"`
	ClosedByTether        int     `json:"closed_by_tether"`
	// Seconds from the signal until a session relayed a round trip through
	// a new upstream connection: median, 99th percentile, last session.
	RecoverP50 float64 `json:"recover_p50_s"`
	RecoverP99 float64 `json:"recover_p99_s"`
	RecoverAll float64 `json:"recover_all_s"`
}

func (st StepResult) line() string {
	return fmt.Sprintf("backends %v killed: %d sessions cut off; restarted after %.1f s; %d relayed again (p50 %.2f s, p99 %.2f s, all %.2f s after the kill), %d not, %d closed by tether",
		st.Backends, st.Affected, st.RestartedAfterSeconds, st.Recovered, st.RecoverP50, st.RecoverP99, st.RecoverAll, st.NotRecovered, st.ClosedByTether)
}

func (sr ScenarioResult) print(w io.Writer, indent string) {
	fmt.Fprintf(w, "%sscenario %s (%s, down %s)\n", indent, sr.Name, sr.Signal, sr.Downtime)
	for _, st := range sr.Steps {
		fmt.Fprintf(w, "%s  %s\n", indent, st.line())
	}
	fmt.Fprintf(w, "%s  storm %.1f s: tether CPU %.2f s (%.0f %% of a core), RSS %.1f MiB before, peak %.1f MiB\n",
		indent, sr.StormSeconds, sr.TetherCPUSeconds, sr.TetherCPUPercent, sr.TetherRSSBeforeMiB, sr.TetherPeakRSSMiB)
	fmt.Fprintf(w, "%s  upstream dials started (tether's log): %d, peak %d in 100 ms, %d in 1 s (bins from the kill)\n",
		indent, sr.DialStarts, sr.PeakDialStarts100ms, sr.PeakDialStarts1s)
	fmt.Fprintf(w, "%s  upstream dials finished (tether's counters): %d succeeded, %d failed; peak %.0f/s over 100 ms, %.0f/s over 1 s\n",
		indent, sr.ReconnectsOK, sr.ReconnectsFailed, sr.PeakDials100ms, sr.PeakDials1s)
	fmt.Fprintf(w, "%s  accepted by the backends: %d connections for %d sessions, peak %d in 100 ms, %d in 1 s\n",
		indent, sr.Accepts, sr.ReconnectedSessions, sr.PeakAccepts100ms, sr.PeakAccepts1s)
	fmt.Fprintf(w, "%s  client messages lost %d (on %d sessions); duplicates %d (%.2f per reconnected session, at most %d on one); tether re-sent %d\n",
		indent, sr.Lost, sr.LostSessions, sr.Duplicates, sr.DuplicatesPerReconnected, sr.MaxDuplicatesOneSession, sr.Resent)
}

// check sets r.OK: no client message lost, no session closed by tether,
// every session relayed again after every kill and at the end, tether
// exited 0 with a clean log.
func (r *Result) check() {
	ok := r.Lost == 0 && r.ClosedByTether == 0 && r.Survived == r.Sessions &&
		r.TetherExit == 0 && r.LogProblems == 0 && len(r.Violations) == 0
	for _, sr := range r.Scenarios {
		ok = ok && sr.Lost == 0
		for _, st := range sr.Steps {
			ok = ok && st.NotRecovered == 0 && st.ClosedByTether == 0
		}
	}
	r.OK = ok
}

// Print writes the human report.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintln(w, "== tetherchurn report")
	fmt.Fprintf(w, "  %d sessions, a %d B message every %s each (mean), a backend push every %s; three backends, %s, down %s; TETHER_RECONNECT_RATE=%d\n",
		r.Sessions, r.Size, r.Interval, r.Push, r.Signal, r.Downtime, r.ReconnectRate)
	fmt.Fprintf(w, "  tether RSS %.1f MiB before the sessions, %.1f MiB with them; CPU %.0f %% of a core with steady traffic (warm-up)\n", r.RSSIdleMiB, r.RSSLoadedMiB, r.SteadyCPUPercent)
	for _, sr := range r.Scenarios {
		sr.print(w, "  ")
	}
	fmt.Fprintf(w, "  end: %d of %d sessions survived (open, final round trip relayed); %d closed by tether\n", r.Survived, r.Sessions, r.ClosedByTether)
	fmt.Fprintf(w, "  client messages: %d sent, %d lost (on %d sessions), %d duplicates; %d backend pushes received\n", r.Sent, r.Lost, r.LostSessions, r.Duplicates, r.Pushes)
	fmt.Fprintf(w, "  tether: exit %d on SIGTERM, %d log problems, %d buffer overflows\n", r.TetherExit, r.LogProblems, r.BufferOverflows)
	for _, v := range r.Violations {
		fmt.Fprintln(w, "  VIOLATION: "+v)
	}
	if r.OK {
		fmt.Fprintln(w, "== result: PASS")
	} else {
		fmt.Fprintln(w, "== result: FAIL")
	}
}

// Failed says why the run failed.
func (r *Result) Failed() string {
	var b strings.Builder
	r.Print(&b)
	return b.String()
}
