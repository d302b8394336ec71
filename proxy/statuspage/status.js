// tether's status page: polls /status.json (and the newest /sessions)
// once a second while the page is visible, keeps the history columns it
// has been sent, and draws them as small SVG plots. No dependencies, no
// requests anywhere but this admin listener.
"use strict";

(() => {
  const POLL_MS = 1000;
  const SESSIONS_SHOWN = 15;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const set = (id, text) => {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  };

  // ---- number formats ----
  const grouped = new Intl.NumberFormat("en-US");
  const fmtInt = (n) => (n == null ? "–" : grouped.format(Math.round(n)));
  function fmtRate(n) {
    if (n == null) return "–";
    if (n === 0) return "0";
    if (n < 10) return n.toFixed(1);
    if (n < 10000) return grouped.format(Math.round(n));
    if (n < 1e6) return (n / 1e3).toFixed(1) + " k";
    return (n / 1e6).toFixed(2) + " M";
  }
  function fmtBytes(n, perSecond) {
    if (n == null) return "–";
    const unit = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < unit.length - 1) { n /= 1024; i++; }
    const s = i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : 1);
    return s + " " + unit[i] + (perSecond ? "/s" : "");
  }
  function fmtMS(v) {
    if (v == null) return "–";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    if (v >= 100) return Math.round(v) + " ms";
    if (v >= 10) return v.toFixed(1) + " ms";
    return v.toFixed(2) + " ms";
  }
  function fmtAge(sec) {
    sec = Math.floor(sec);
    if (sec < 60) return sec + " s";
    const m = Math.floor(sec / 60), s = sec % 60;
    if (m < 60) return m + " min " + s + " s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  // ---- history kept by the page ----
  // Columns as /status.json's "history" names them; the page appends what
  // each poll brings (only samples after the last one it has).
  const hist = {};
  let lastT = 0;
  let keepMS = 300000;

  function merge(h) {
    keepMS = h.keep_seconds * 1000;
    if (!h.t || h.t.length === 0) return;
    // The server's history restarted (its sampler stopped while nobody
    // looked): start over rather than join across the gap.
    if (lastT && h.t[0] - lastT > 10 * h.interval_seconds * 1000) {
      for (const k of Object.keys(hist)) delete hist[k];
    }
    for (const [k, col] of Object.entries(h)) {
      if (!Array.isArray(col)) continue;
      (hist[k] ||= []).push(...col);
    }
    lastT = hist.t[hist.t.length - 1];
    const cut = hist.t.findIndex((t) => t >= lastT - keepMS);
    if (cut > 0) for (const k of Object.keys(hist)) hist[k].splice(0, cut);
  }

  // ---- plots ----
  // spark draws series (arrays aligned on hist.t; null is a gap) over the
  // history window, as lines (the first with an area) or as bars.
  function spark(id, series, opts = {}) {
    const svg = $(id);
    const w = Math.max(svg.clientWidth, 100), h = svg.clientHeight || 56;
    const top = 12, bottom = h - 1;
    const t = hist.t || [];
    // The plot spans what is held, up to the history window: a page just
    // opened fills its width with the seconds it has.
    const span = Math.max(Math.min(keepMS, lastT - (t[0] ?? lastT)), 10000);
    const t0 = lastT - span;
    let max = opts.min || 1;
    for (const s of series) for (const v of s.values || []) if (v != null && v > max) max = v;
    max *= 1.1;
    const x = (ti) => ((ti - t0) / span) * w;
    const y = (v) => bottom - (v / max) * (bottom - top);
    const parts = [];
    parts.push(`<line class="grid" x1="0" x2="${w}" y1="${bottom}" y2="${bottom}"/>`);
    parts.push(`<line class="grid" x1="0" x2="${w}" y1="${top}" y2="${top}" stroke-dasharray="2 3"/>`);
    parts.push(`<text class="axis" x="${w}" y="${top - 3}" text-anchor="end">${opts.fmt ? opts.fmt(max / 1.1) : fmtRate(max / 1.1)}</text>`);
    parts.push(`<text class="axis" x="0" y="${top - 3}">${span >= 60000 ? Math.round(span / 60000) + " min" : Math.round(span / 1000) + " s"}</text>`);
    let points = 0;
    series.forEach((s, si) => {
      const vals = s.values || [];
      if (opts.bars) {
        const bw = Math.max(2, w / (span / 1000) - 1);
        vals.forEach((v, i) => {
          if (v == null || v <= 0 || t[i] < t0) return;
          points++;
          const yy = y(v);
          parts.push(`<rect class="bar ${s.cls}" x="${(x(t[i]) - bw).toFixed(1)}" y="${yy.toFixed(1)}" width="${bw.toFixed(1)}" height="${(bottom - yy).toFixed(1)}"/>`);
        });
        return;
      }
      let d = "", area = "", open = false, segStart = 0;
      vals.forEach((v, i) => {
        if (v == null || t[i] < t0) {
          if (open && si === 0) area += `L${x(t[i - 1]).toFixed(1)},${bottom}L${segStart.toFixed(1)},${bottom}Z`;
          open = false;
          return;
        }
        points++;
        const px = x(t[i]).toFixed(1), py = y(v).toFixed(1);
        if (!open) {
          d += `M${px},${py}`;
          area += `M${px},${bottom}L${px},${py}`;
          segStart = +px;
          open = true;
        } else {
          d += `L${px},${py}`;
          area += `L${px},${py}`;
        }
      });
      if (open && si === 0) area += `L${x(t[vals.length - 1]).toFixed(1)},${bottom}L${segStart.toFixed(1)},${bottom}Z`;
      if (si === 0 && s.area !== false && area) parts.push(`<path class="area" d="${area}"/>`);
      if (d) parts.push(`<path class="line ${s.cls}" d="${d}"/>`);
    });
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.innerHTML = parts.join("");
    svg.dataset.points = String(points);
  }

  // ---- rendering ----
  function renderStatus(st) {
    const ready = $("ready");
    ready.dataset.state = st.ready ? "ready" : "draining";
    ready.textContent = st.ready ? "ready" : "draining";
    set("uptime", fmtAge(st.uptime_seconds));
    set("keep", Math.round(st.history.keep_seconds / 60) + " min");

    const ss = st.sessions;
    set("sessions-active", fmtInt(ss.active));
    set("sessions-connected", fmtInt(ss.connected));
    set("sessions-reconnecting", fmtInt(ss.reconnecting));
    set("sessions-detached", fmtInt(ss.detached));
    set("resume-note", ss.resume ? "" : "(resume off)");
    set("sessions-total", fmtInt(ss.total));
    set("sessions-max", ss.max > 0 ? fmtInt(ss.max) : "none");
    const bd = st.build;
    set("version", bd.version ? `${bd.version} · ${bd.go_version} · ${bd.revision.slice(0, 12)}` : "");

    const up = st.traffic.client_to_upstream, down = st.traffic.upstream_to_client;
    set("msgs-up", fmtRate(up.messages_per_second));
    set("msgs-down", fmtRate(down.messages_per_second));
    set("msgs-total", fmtInt(up.messages_total) + " ↑ · " + fmtInt(down.messages_total) + " ↓");
    set("bytes-up", fmtBytes(up.bytes_per_second, true));
    set("bytes-down", fmtBytes(down.bytes_per_second, true));
    set("bytes-total", fmtBytes(up.bytes_total) + " ↑ · " + fmtBytes(down.bytes_total) + " ↓");

    const rc = st.reconnects;
    set("reconnects-success", fmtInt(rc.success_total));
    set("reconnects-failure", fmtInt(rc.failure_total));
    set("history-span", hist.t && hist.t.length ? fmtAge((lastT - hist.t[0]) / 1000) : "–");
    set("reconnects-recent", fmtInt(rc.recent_success) + " succeeded · " + fmtInt(rc.recent_failure) + " failed");

    for (const leg of ["client", "upstream"]) {
      const hb = st.heartbeats[leg];
      const r = hb.rtt_recent;
      set(`rtt-${leg}-p50`, fmtMS(r.p50_ms));
      set(`rtt-${leg}-p90`, fmtMS(r.p90_ms));
      set(`rtt-${leg}-p99`, fmtMS(r.p99_ms));
      set(`rtt-${leg}-all`, hb.rtt.p50_ms == null ? "–" : "p50 " + fmtMS(hb.rtt.p50_ms) + " · p99 " + fmtMS(hb.rtt.p99_ms));
      set(`rtt-${leg}-note`, hb.mode === "off"
        ? "heartbeats off on this leg: no round trips"
        : `${fmtInt(r.count)} pongs in the last ${Math.round(r.window_seconds || 0)} s · ping every ${fmtMS(hb.interval_ms)}`);
      set(`timeouts-${leg}`, fmtInt(hb.timeouts_total));
      set(`pings-${leg}`, fmtInt(hb.pings_sent_total));
    }

    const b = st.buffer;
    set("held-retained", fmtInt(b.retained));
    set("held-buffered", fmtInt(b.buffered));
    set("held-bytes", fmtBytes(b.bytes) + " held, of " + fmtBytes(b.total_max_bytes) + " for all sessions");
    set("held-overflows", fmtInt(b.overflows_total));
    set("held-resent", fmtInt(b.resent_total));

    const p = st.process;
    set("proc-goroutines", fmtInt(p.goroutines));
    set("proc-rss", fmtBytes(p.resident_bytes));
    set("proc-heap", fmtBytes(p.heap_bytes));
    set("proc-parked", fmtInt(p.parked_legs));
    set("proc-hb", st.heartbeats.client.mode + " / " + st.heartbeats.upstream.mode);

    const cfg = $("config").tBodies[0];
    if (cfg.rows.length !== st.config.length) {
      cfg.replaceChildren(...st.config.map((v) => {
        const tr = document.createElement("tr");
        const k = document.createElement("td"), val = document.createElement("td");
        k.className = "mono"; val.className = "mono";
        k.textContent = v.name;
        val.textContent = v.value === "" ? "(empty)" : v.value;
        tr.append(k, val);
        return tr;
      }));
    }

    spark("spark-sessions", [{ values: hist.active, cls: "s0" }, { values: hist.reconnecting, cls: "s1" }], { fmt: fmtInt });
    spark("spark-messages", [{ values: hist.messages_per_second_up, cls: "s0" }, { values: hist.messages_per_second_down, cls: "s1" }], { fmt: (v) => fmtRate(v) + "/s" });
    spark("spark-bytes", [{ values: hist.bytes_per_second_up, cls: "s0" }, { values: hist.bytes_per_second_down, cls: "s1" }], { fmt: (v) => fmtBytes(v, true), min: 1024 });
    spark("spark-reconnects", [{ values: hist.reconnects_success, cls: "s0" }, { values: hist.reconnects_failure, cls: "s2" }], { bars: true, fmt: fmtInt });
    spark("spark-timeouts", [{ values: hist.timeouts_client, cls: "s0" }, { values: hist.timeouts_upstream, cls: "s2" }], { bars: true, fmt: fmtInt });
    spark("spark-rtt-client", [{ values: hist.rtt_client_p50_ms, cls: "s0" }, { values: hist.rtt_client_p99_ms, cls: "s1" }], { fmt: fmtMS, min: 0.1 });
    spark("spark-rtt-upstream", [{ values: hist.rtt_upstream_p50_ms, cls: "s0" }, { values: hist.rtt_upstream_p99_ms, cls: "s1" }], { fmt: fmtMS, min: 0.1 });
    spark("spark-held", [{ values: hist.retained, cls: "s0" }, { values: hist.buffered, cls: "s1" }], { fmt: fmtInt });
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function renderSessions(page) {
    set("sessions-count", page.count > page.sessions.length
      ? `(${page.sessions.length} of ${fmtInt(page.count)})` : `(${fmtInt(page.count)})`);
    const body = $("sessions").tBodies[0];
    if (page.sessions.length === 0) {
      const tr = document.createElement("tr");
      const td = cell("no sessions", "empty");
      td.colSpan = 10;
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(...page.sessions.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.id = s.id;
      const state = cell(s.state, "state");
      state.dataset.state = s.state;
      tr.append(cell(s.id, "mono"), cell(fmtAge(s.age_seconds)), cell(s.remote, "mono"), state, cell(s.upstream, "mono"),
        cell(fmtMS(s.rtt_ms.client), "r"), cell(fmtMS(s.rtt_ms.upstream), "r"),
        cell(fmtInt(s.retained), "r"), cell(fmtInt(s.buffered), "r"), cell(fmtInt(s.reconnects), "r"));
      return tr;
    }));
  }

  // ---- polling ----
  const api = { renders: 0, status: null, sessions: null, history: hist, error: null };
  window.tetherStatus = api;

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  let timer = 0;
  async function poll() {
    clearTimeout(timer);
    if (document.hidden) return; // resumes on visibilitychange
    try {
      const [st, page] = await Promise.all([getJSON("status.json?since=" + lastT), getJSON("sessions?limit=" + SESSIONS_SHOWN)]);
      merge(st.history);
      renderStatus(st);
      renderSessions(page);
      api.status = st;
      api.sessions = page;
      api.error = null;
      api.renders++;
      const live = $("live");
      live.dataset.state = "live";
      live.textContent = "live, updated " + new Date(st.time).toLocaleTimeString("en-GB");
    } catch (e) {
      api.error = String(e);
      $("live").dataset.state = "stale";
      set("live", "not updating: " + e.message);
      $("ready").dataset.state = "unreachable";
      set("ready", "unreachable");
    }
    timer = setTimeout(poll, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  window.addEventListener("resize", () => { if (api.status) renderStatus(api.status); });
  poll();
})();
