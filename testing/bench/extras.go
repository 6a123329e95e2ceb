package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/testing/harness"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

// cpuSample is the CPU time used so far by Vault, the plugin, this
// process (the portal, the clients and the fake upstream) and the peer.
type cpuSample struct{ vault, plugin, self, peer time.Duration }

type cpuPerCall struct{ vault, plugin, self, peer time.Duration }

func (c cpuPerCall) String() string {
	return fmt.Sprintf("%s / %s / %s / %s", ms(c.vault), ms(c.plugin), ms(c.self), ms(c.peer))
}

func (st *stack) cpuNow() cpuSample {
	return cpuSample{vault: procCPU(st.vault.Pid()), plugin: procCPU(pluginPid(st.vault.Pid())), self: procCPU(os.Getpid()), peer: procCPU(peer.pid)}
}

func (s cpuSample) since(before cpuSample, calls int64) cpuPerCall {
	if calls == 0 {
		return cpuPerCall{}
	}
	return cpuPerCall{
		vault:  (s.vault - before.vault) / time.Duration(calls),
		plugin: (s.plugin - before.plugin) / time.Duration(calls),
		self:   (s.self - before.self) / time.Duration(calls),
		peer:   (s.peer - before.peer) / time.Duration(calls),
	}
}

// procCPU is a process's user plus system time.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / clockTicks
}

// pluginPid finds the engine's process among Vault's children.
func pluginPid(vaultPid int) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || !strings.HasPrefix(harness.PluginBinaryName, strings.TrimSpace(string(comm))) {
			continue
		}
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == vaultPid {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	return 0
}

// rssKiB is this process's resident set.
func rssKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// extras measures what the call table does not: the first streamed event,
// a 1 MiB answer, and memory under concurrent large downloads.
func (st *stack) extras(ctx context.Context, w io.Writer, rounds, downloads int) error {
	edge := st.portalURL + "/broker/" + org + "/" + cred
	const samples = 30
	fmt.Fprintf(w, "\n| measure (median of %d) | direct | edge | Vault path | peer |\n|---|---:|---:|---:|---:|\n", samples*rounds)
	var peerSSE, peerMiB func() (time.Duration, error)
	if st.peerClient != nil {
		peerSSE = func() (time.Duration, error) {
			return st.firstEventVia(ctx, st.peerClient, "http://"+peer.host+"/v1/chat/completions?events=5&gap_ms=20", "Proxy-Authorization", "Bearer "+peer.token)
		}
		peerMiB = func() (time.Duration, error) {
			t0 := time.Now()
			err := st.peerGet(ctx, "http://"+peer.host+"/bytes?n=1048576")
			return time.Since(t0), err
		}
	}
	sse := func(url, hdr, val string) func() (time.Duration, error) {
		return func() (time.Duration, error) { return st.firstEvent(ctx, url, hdr, val) }
	}
	row := func(name string, fns ...func() (time.Duration, error)) error {
		fmt.Fprintf(w, "| %s |", name)
		for _, fn := range fns {
			if fn == nil {
				fmt.Fprint(w, " n/a |")
				continue
			}
			var lat []time.Duration
			for i := 0; i < samples*rounds; i++ {
				d, err := fn()
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				lat = append(lat, d)
			}
			fmt.Fprintf(w, " %s |", ms(percentile(lat, 50)))
		}
		fmt.Fprintln(w)
		return nil
	}
	if err := row("first server-sent event (5 events, 20 ms apart)",
		sse(st.up.URL+"/v1/chat/completions?events=5&gap_ms=20", "Authorization", "Bearer "+apiKey),
		sse(edge+"/v1/chat/completions?events=5&gap_ms=20", "Authorization", "Bearer "+st.agentToken),
		nil, peerSSE); err != nil {
		return err
	}
	mib := func(url, hdr, val string, body []byte) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			t0 := time.Now()
			err := st.get(ctx, url, hdr, val, body)
			return time.Since(t0), err
		}
	}
	if err := row("1 MiB answer",
		mib(st.up.URL+"/bytes?n=1048576", "Authorization", "Bearer "+apiKey, nil),
		mib(edge+"/bytes?n=1048576", "Authorization", "Bearer "+st.agentToken, nil),
		mib(st.vault.Addr+"/v1/"+contract.Mount(org)+"/proxy/"+cred+"/GET/bytes", "X-Vault-Token", st.agentToken, []byte(`{"query":"n=1048576"}`)),
		peerMiB,
	); err != nil {
		return err
	}
	if downloads > 0 {
		return st.downloadMemory(ctx, w, edge, downloads)
	}
	return nil
}

// firstEvent is the time from sending a streaming request to reading the
// first event's data line; the rest of the stream is drained.
func (st *stack) firstEvent(ctx context.Context, url, hdr, val string) (time.Duration, error) {
	return st.firstEventVia(ctx, st.client, url, hdr, val)
}

func (st *stack) firstEventVia(ctx context.Context, client *http.Client, url, hdr, val string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"stream":true}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set(hdr, val)
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			d := time.Since(t0)
			_, _ = io.Copy(io.Discard, br)
			return d, nil
		}
		if err != nil {
			return 0, fmt.Errorf("no event: %w", err)
		}
	}
}

// downloadMemory streams n concurrent 50 MB downloads through the edge and
// reports how much this process (portal, clients and fake upstream
// together, so an upper bound for the portal) grew.
func (st *stack) downloadMemory(ctx context.Context, w io.Writer, edge string, n int) error {
	const size = 50_000_000
	before := rssKiB()
	peak := before
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				peak = max(peak, rssKiB())
			}
		}
	}()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/bytes?n="+strconv.Itoa(size), nil)
			req.Header.Set("Authorization", "Bearer "+st.agentToken)
			resp, err := st.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			got, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || got != size {
				errs <- fmt.Errorf("download: %d bytes, %v", got, err)
			}
		}()
	}
	wg.Wait()
	close(done)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	elapsed := time.Since(t0)
	fmt.Fprintf(w, "\n%d concurrent 50 MB downloads through the edge: %.1f s, %.0f MB/s in all; "+
		"RSS of the process running portal, clients and upstream grew by %d MB (from %d MB to a peak of %d MB)\n",
		n, elapsed.Seconds(), float64(n*size)/1e6/elapsed.Seconds(), (peak-before)/1024, before/1024, peak/1024)
	return nil
}
