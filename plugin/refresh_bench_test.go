package credentials

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/oauth2"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// BenchmarkRefreshTick measures the periodic function's refresh work in a
// mount with 10,000 oauth2 credentials: a tick with nothing due, the first
// tick of a new backend instance (which checks every grant is filed), and a
// tick with 1,000 grants due (real refreshes against the test authorization
// server, bounded concurrency). Run with:
//
//	go test ./plugin/ -run '^$' -bench BenchmarkRefreshTick -benchtime 5x
func BenchmarkRefreshTick(b *testing.B) {
	const total = 10000
	b.Run("10000 creds, none due", func(b *testing.B) {
		f, cs := benchMount(b, total, 0)
		b.ResetTimer()
		for range b.N {
			if err := f.b.refreshDue(context.Background(), cs); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(cs.reads.Load())/float64(b.N), "reads/op")
		if n := f.srv.TokenCalls(); n != 0 {
			b.Fatalf("%d token calls with nothing due", n)
		}
	})
	b.Run("10000 creds, first tick after a restart", func(b *testing.B) {
		// A new backend instance loads the inventory and checks that every
		// grant is filed, once.
		f, cs := benchMount(b, total, 0)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			fresh, _, _ := getTestBackend(b)
			fresh.logger, fresh.now = hclog.NewNullLogger(), f.clock.now
			b.StartTimer()
			if err := fresh.refreshDue(context.Background(), cs); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(cs.reads.Load())/float64(b.N), "reads/op")
	})
	b.Run("10000 creds, 1000 due", func(b *testing.B) {
		const due = 1000
		f, cs := benchMount(b, total, due)
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			f.clock.advance(time.Hour) // the 1,000 real grants are due again
			cs.reads.Store(0)
			b.StartTimer()
			if err := f.b.refreshDue(context.Background(), cs); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken); n != due*(i+1) {
				b.Fatalf("%d refreshes after %d ticks, want %d", n, i+1, due*(i+1))
			}
			b.ReportMetric(float64(cs.reads.Load()), "reads/op")
			b.StartTimer()
		}
		b.ReportMetric(due, "refreshes/op")
	})
}

// benchMount stores total oauth2 credentials, of which due hold real grants
// from the test server expiring in an hour; the others are not due for
// years. It runs the first tick (which files what is unfiled) before
// returning.
func benchMount(b *testing.B, total, due int) (*oauthFixture, *readCountingStorage) {
	b.Helper()
	ctx := context.Background()
	f := newOAuthFixture(b, oauthserver.Options{}, nil)
	f.b.logger = hclog.NewNullLogger() // measure the work, not the log
	conf := &oauth2.Config{
		ClientID: testClientID, ClientSecret: testClientSecret, RedirectURL: testRedirectURL,
		Endpoint: oauth2.Endpoint{AuthURL: f.srv.AuthURL(), TokenURL: f.srv.TokenURL(), AuthStyle: oauth2.AuthStyleInParams},
	}
	svc, err := f.b.getService(ctx, f.s, "idp")
	if err != nil {
		b.Fatal(err)
	}
	cfg, _ := f.b.getConfig(ctx, f.s)
	now := f.clock.now()
	for i := range total {
		g := &oauthGrant{
			AccessToken: fmt.Sprintf("idle-access-%d", i), RefreshToken: fmt.Sprintf("idle-refresh-%d", i),
			Expiry: now.Add(10 * 365 * 24 * time.Hour), ConnectedAt: now, RefreshedAt: now,
		}
		if i < due {
			tok := benchGrant(b, f, conf)
			g.AccessToken, g.RefreshToken, g.Expiry = tok.AccessToken, tok.RefreshToken, now.Add(time.Hour)
		}
		c := &credential{
			Name: fmt.Sprintf("cred-%05d", i), Type: typeOAuth2, Service: "idp", App: "idp-app",
			State: statusActive, CreatedAt: now, UpdatedAt: now, OAuth: g,
		}
		f.b.refile(ctx, f.s, c, refreshDueAt(g, svc.OAuth, cfg, now), false)
		if err := f.b.saveCredential(ctx, f.s, c); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.b.refreshDue(ctx, f.s); err != nil {
		b.Fatal(err)
	}
	return f, &readCountingStorage{Storage: f.s}
}

// benchGrant obtains a grant from the test server as a client would; the
// engine's access token lifetime is the fixture's clock, not the server's.
func benchGrant(b *testing.B, f *oauthFixture, conf *oauth2.Config) *oauth2.Token {
	b.Helper()
	q := f.authorize(conf.AuthCodeURL("bench-state-0123456789"))
	tok, err := conf.Exchange(context.Background(), q.Get("code"))
	if err != nil {
		b.Fatal(err)
	}
	return tok
}
