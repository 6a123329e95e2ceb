package main

// Measuring a scenario: latency at concurrency 1, throughput and CPU per
// call at concurrency c, the medians of rounds, and the table printed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	scenario
	p50, p99     time.Duration // at concurrency 1
	rps          float64       // at concurrency c
	cp50, cp99   time.Duration // at concurrency c
	calls, fails int64
	// cpu is CPU time per call at concurrency c, by process.
	cpu cpuPerCall
}

func (st *stack) measure(ctx context.Context, sc scenario, n, conc int, d time.Duration) (result, error) {
	r := result{scenario: sc}
	for i := 0; i < warmups; i++ {
		if err := sc.call(ctx); err != nil {
			return r, err
		}
	}
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := sc.call(ctx); err != nil {
			return r, err
		}
		lat = append(lat, time.Since(start))
	}
	r.p50, r.p99 = percentile(lat, 50), percentile(lat, 99)

	runtime.GC()
	var (
		mu       sync.Mutex
		all      []time.Duration
		calls    atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	cpu0 := st.cpuNow()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := sc.call(ctx); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mine = append(mine, time.Since(t0))
				calls.Add(1)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.calls, r.fails = calls.Load(), failures.Load()
	r.cpu = st.cpuNow().since(cpu0, r.calls)
	if r.fails > 0 {
		return r, fmt.Errorf("%d of %d calls failed under load, first: %v", r.fails, r.fails+r.calls, firstErr.Load())
	}
	r.rps = float64(r.calls) / elapsed.Seconds()
	r.cp50, r.cp99 = percentile(all, 50), percentile(all, 99)
	return r, nil
}

func percentile(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func printTable(w io.Writer, rs []result, n, conc int, d time.Duration, rounds int) {
	fmt.Fprintf(w, "%d calls at concurrency 1 (after %d warm-up calls); %s at concurrency %d; medians of %d interleaved rounds; GOMAXPROCS %d\n\n",
		n, warmups, d, conc, rounds, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "| scenario | p50 (c=1) | p99 (c=1) | throughput (c=%d) | p50 (c=%d) | p99 (c=%d) | CPU per call (c=%d): Vault / plugin / bench process / peer |\n", conc, conc, conc, conc)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	by := map[string]result{}
	for _, r := range rs {
		by[r.name] = r
		fmt.Fprintf(w, "| %s | %s | %s | %.0f req/s | %s | %s | %s |\n", r.desc, ms(r.p50), ms(r.p99), r.rps, ms(r.cp50), ms(r.cp99), r.cpu)
	}
	for _, prefix := range []string{"remote-", "remote-stateless-"} {
		d, okD := by[prefix+"direct"]
		r, okR := by[prefix+"mcp"]
		if okD && okR {
			fmt.Fprintln(w)
			fmt.Fprintf(w, "%s: p50 over the direct call %s; throughput %.2fx the direct call's\n", r.desc, ms(r.p50-d.p50), r.rps/d.rps)
		}
	}
	direct, okD := by["direct"]
	floor, okF := by["floor"]
	if !okD || !okF {
		return
	}
	fmt.Fprintln(w)
	if p, ok := by["peer"]; ok {
		fmt.Fprintf(w, "%s: p50 over direct %s; throughput %.0f req/s\n", p.desc, ms(p.p50-direct.p50), p.rps)
	}
	for _, name := range []string{"edge", "vault"} {
		r, ok := by[name]
		if !ok {
			continue
		}
		over := r.p50 - direct.p50
		fmt.Fprintf(w, "%s: p50 over direct %s (%.2fx the floor's p50); throughput %.2fx the floor's\n",
			r.desc, ms(over), float64(over)/float64(floor.p50), r.rps/floor.rps)
	}
}

// median takes, per measure, the median over rounds.
func median(rs []result) result {
	out := rs[0]
	pick := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	out.p50 = time.Duration(pick(func(r result) float64 { return float64(r.p50) }))
	out.p99 = time.Duration(pick(func(r result) float64 { return float64(r.p99) }))
	out.cp50 = time.Duration(pick(func(r result) float64 { return float64(r.cp50) }))
	out.cp99 = time.Duration(pick(func(r result) float64 { return float64(r.cp99) }))
	out.rps = pick(func(r result) float64 { return r.rps })
	out.cpu.vault = time.Duration(pick(func(r result) float64 { return float64(r.cpu.vault) }))
	out.cpu.plugin = time.Duration(pick(func(r result) float64 { return float64(r.cpu.plugin) }))
	out.cpu.self = time.Duration(pick(func(r result) float64 { return float64(r.cpu.self) }))
	out.cpu.peer = time.Duration(pick(func(r result) float64 { return float64(r.cpu.peer) }))
	return out
}

// profileVault records Vault's own CPU profile (sys/pprof/profile, root
// token) for the given seconds from now, and writes it to path once they
// are over: where Vault's share of a call goes.
func (st *stack) profileVault(path string, seconds int) (wait func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, st.vault.Addr+"/v1/sys/pprof/profile?seconds="+strconv.Itoa(seconds), nil)
	if err != nil {
		f.Close()
		return nil, err
	}
	req.Header.Set("X-Vault-Token", st.vault.RootToken)
	finished := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("vault's profile: %s", resp.Status)
			} else {
				_, err = io.Copy(f, resp.Body)
			}
			resp.Body.Close()
		}
		finished <- errors.Join(err, f.Close())
	}()
	return func() error { return <-finished }, nil
}
