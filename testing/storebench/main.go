// Command storebench measures the credential store through the real Vault
// HTTP API: writing 10,000 credentials of mixed types into one mount, then
// LIST creds/ with key_info, with a type filter and with a name search, and
// the plugin process's resident memory after.
//
//	make plugin && go run ./testing/storebench [-n 10000] [-rounds 50]
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
	"github.com/clankteam/credentials/testing/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("n", 10000, "credentials to write")
	rounds := flag.Int("rounds", 50, "LIST calls per variant")
	workers := flag.Int("workers", 16, "concurrent writers")
	plugin := flag.String("plugin", "bin/"+harness.PluginBinaryName, "engine binary (built without -race)")
	flag.Parse()

	ctx := context.Background()
	v, err := harness.Start(ctx, harness.Options{PluginBinary: *plugin})
	if err != nil {
		return err
	}
	defer v.Stop()
	if err := v.CreateOrg(ctx, "bench"); err != nil {
		return err
	}
	c := v.Client()
	mount := contract.Mount("bench")
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/apps/google", map[string]interface{}{
		"service": "google", "client_id": "bench", "client_secret": "bench-secret",
	}); err != nil {
		return err
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/services/files", map[string]interface{}{"types": "file"}); err != nil {
		return err
	}

	start := time.Now()
	if err := writeAll(ctx, c, mount, *n, *workers); err != nil {
		return err
	}
	writeTime := time.Since(start)

	variants := []struct {
		name   string
		params map[string]string
	}{
		{"LIST creds/ with key_info (all)", nil},
		{"LIST creds/ type=api_key", map[string]string{"type": "api_key"}},
		{"LIST creds/ q=7 (name search)", map[string]string{"q": "7"}},
		{"LIST creds/ limit=100 (one page)", map[string]string{"limit": "100"}},
	}
	fmt.Printf("credentials: %d (mixed types), written with %d workers in %s (%.0f/s)\n\n",
		*n, *workers, writeTime.Round(time.Millisecond), float64(*n)/writeTime.Seconds())
	fmt.Println("| request | keys returned | p50 | p99 |")
	fmt.Println("|---|---|---|---|")
	for _, vr := range variants {
		var lat []time.Duration
		keys := 0
		for i := 0; i < *rounds+3; i++ {
			got, took, err := list(ctx, c, mount, vr.params)
			if err != nil {
				return err
			}
			if i >= 3 { // the first calls warm caches
				lat = append(lat, took)
			}
			keys = got
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Printf("| %s | %d | %s | %s |\n", vr.name, keys, pct(lat, 50), pct(lat, 99))
	}
	rss, err := pluginRSS()
	if err != nil {
		return err
	}
	fmt.Printf("\nplugin RSS after: %s\n", rss)
	return nil
}

func writeAll(ctx context.Context, c *api.Client, mount string, n, workers int) error {
	jobs := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if _, err := c.Logical().WriteWithContext(ctx, fmt.Sprintf("%s/creds/cred-%05d", mount, i), credData(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
	for i := 0; i < n && err == nil; i++ {
		select {
		case jobs <- i:
		case err = <-errs:
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// credData cycles through the four types.
func credData(i int) map[string]interface{} {
	switch i % 4 {
	case 0:
		return map[string]interface{}{"type": "api_key", "service": "stripe", "api_key": fmt.Sprintf("sk_test_bench_%016d", i),
			"expires_at": time.Now().Add(time.Duration(i%30) * 24 * time.Hour).UTC().Format(time.RFC3339)}
	case 1:
		return map[string]interface{}{"type": "password", "service": "smtp", "username": "u", "password": "p-" + strconv.Itoa(i), "host": "smtp.example.com", "port": 587}
	case 2:
		return map[string]interface{}{"type": "file", "service": "files", "file": base64.StdEncoding.EncodeToString([]byte("x")), "filename": "f"}
	}
	return map[string]interface{}{"type": "oauth2", "service": "google", "app": "google"}
}

// list times one LIST from sending the request to receiving the whole
// response; decoding it, the caller's own work, is not counted.
func list(ctx context.Context, c *api.Client, mount string, params map[string]string) (int, time.Duration, error) {
	req := c.NewRequest("GET", "/v1/"+mount+"/creds/")
	req.Params.Set("list", "true")
	for k, v := range params {
		req.Params.Set(k, v)
	}
	t0 := time.Now()
	//lint:ignore SA1019 a raw request is the point: any method, and the status and body as Vault sent them
	resp, err := c.RawRequestWithContext(ctx, req)
	if err != nil {
		return 0, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	s, err := api.ParseSecret(bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	if s == nil || s.Data == nil {
		return 0, took, nil
	}
	keys, _ := s.Data["keys"].([]interface{})
	return len(keys), took, nil
}

func pct(lat []time.Duration, p int) string {
	if len(lat) == 0 {
		return "-"
	}
	i := (len(lat) - 1) * p / 100
	return lat[i].Round(100 * time.Microsecond).String()
}

// pluginRSS finds the engine's process and reads its resident set size.
func pluginRSS() (string, error) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cmd), harness.PluginBinaryName) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), nil
			}
		}
	}
	return "", fmt.Errorf("plugin process not found")
}
