package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clankteam/credentials/testing/harness"
)

// chromiumPath is Debian's chromium unless $CHROMIUM names another.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// newBrowser starts headless Chromium for one test, with its profile,
// temporary files and caches inside the test's temporary directory.
func newBrowser(t *testing.T) *tab {
	t.Helper()
	if skipBrowser() {
		t.Skip("SKIPPED: SKIP_BROWSER_TESTS=1 is set, so this browser test did not run")
	}
	bin := chromiumPath()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("chromium not found at %s (run `make chromium`, or set SKIP_BROWSER_TESTS=1 to skip browser tests): %v", bin, err)
	}
	dir := t.TempDir()
	for _, d := range []string{"tmp", "config", "cache", "profile"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Env(
			"TMPDIR="+filepath.Join(dir, "tmp"),
			"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
			"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		),
	)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	// Starts the browser with no deadline: a deadline on the first run
	// would end the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return &tab{t: t, ctx: ctx, shots: artifactsDir(t), prefix: t.Name(), portalURL: st.portal.URL()}
}

// tab drives one browser tab and records each page it checks.
type tab struct {
	t      *testing.T
	ctx    context.Context
	shots  string
	prefix string
	step   int
	// portalURL is the portal whose pages check runs axe on.
	portalURL string
}

// timeout bounds one browser action; a stuck page fails the test rather
// than hanging it.
const timeout = 30 * time.Second

func (b *tab) actx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, timeout)
}

// do runs actions that return nothing.
func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (at %s)", err, b.location())
	}
}

// navigate opens url and returns the HTTP status of the page.
func (b *tab) navigate(url string) int64 {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		b.t.Fatalf("navigating to %s: %v", url, err)
	}
	return resp.Status
}

// click clicks sel and waits for the page it leads to; it returns that
// page's HTTP status.
func (b *tab) click(sel string) int64 {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.t.Fatalf("clicking %s: %v (at %s)", sel, err, b.location())
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.t.Fatalf("reading %s: %v (at %s)", sel, err, b.location())
	}
	return strings.TrimSpace(s)
}

func (b *tab) html() string {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil {
		b.t.Fatalf("reading the page: %v", err)
	}
	return s
}

// count is the number of elements sel matches now.
func (b *tab) count(sel string) int {
	b.t.Helper()
	ctx, cancel := b.actx()
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
	if err != nil {
		b.t.Fatalf("counting %s: %v", sel, err)
	}
	return n
}

func (b *tab) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "?"
	}
	return loc
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// check records the page the tab shows: a screenshot under
// testing/artifacts/browser, the axe-core accessibility check (no serious or
// critical violation), and the canary check (no planted secret in it).
func (b *tab) check(name string) {
	b.t.Helper()
	b.step++
	file := fmt.Sprintf("%s-%02d-%s.png", unsafeName.ReplaceAllString(b.prefix, "_"), b.step, name)
	ctx, cancel := b.actx()
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot of %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, file), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if leaked := findCanary(b.html()); leaked != "" {
		b.t.Errorf("page %s (%s) shows a planted secret", name, b.location())
	}
	// Pages of other servers (the provider's consent page) are not the
	// portal's to fix.
	if !strings.HasPrefix(b.location(), b.portalURL) {
		return
	}
	// The portal's pages work without JavaScript: they have none.
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.scripts.length`)); err != nil || n != 0 {
		b.t.Errorf("page %s has %d scripts (%v)", name, n, err)
	}
	b.axe(name)
}

// axeViolation is the part of an axe-core result the test reports.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any  `json:"target"`
		HTML   string `json:"html"`
	} `json:"nodes"`
}

var (
	axeOnce   sync.Once
	axeSource string
	axeErr    error
)

// loadAxe reads axe-core, installed from npm by scripts/install-npm-assets.sh.
func loadAxe() (string, error) {
	axeOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			axeErr = err
			return
		}
		b, err := os.ReadFile(filepath.Join(root, "testing", "browser", "node_modules", "axe-core", "axe.min.js"))
		if err != nil {
			axeErr = fmt.Errorf("axe-core is not installed (run `make npm-assets`): %w", err)
			return
		}
		axeSource = string(b)
	})
	return axeSource, axeErr
}

// axe runs axe-core in the page (injected through the DevTools protocol,
// which the page's CSP does not govern) and fails on serious or critical
// violations.
func (b *tab) axe(name string) {
	b.t.Helper()
	src, err := loadAxe()
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := b.actx()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](src)); err != nil {
		b.t.Fatalf("injecting axe-core on %s: %v", name, err)
	}
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](
		`axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations)`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("running axe-core on %s: %v", name, err)
	}
	var violations []axeViolation
	if err := json.Unmarshal(raw, &violations); err != nil {
		b.t.Fatalf("axe-core result on %s: %v", name, err)
	}
	for _, v := range violations {
		if v.Impact != "serious" && v.Impact != "critical" {
			b.t.Logf("axe (%s, %s) on %s: %s", v.Impact, v.ID, name, v.Help)
			continue
		}
		var where []string
		for _, n := range v.Nodes {
			where = append(where, n.HTML)
		}
		b.t.Errorf("axe %s violation %q on page %s: %s\n  %s", v.Impact, v.ID, name, v.Help, strings.Join(where, "\n  "))
	}
}
