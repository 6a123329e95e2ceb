package credentials

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/testing/oauthserver"
)

// deposedStorage is the storage of a node that lost leadership: reads
// work, every write fails.
type deposedStorage struct{ logical.Storage }

func (deposedStorage) Put(context.Context, *logical.StorageEntry) error { return logical.ErrReadOnly }
func (deposedStorage) Delete(context.Context, string) error             { return logical.ErrReadOnly }

// TestRefreshIsFencedByAWrite: a node whose writes fail (a deposed or
// frozen leader) does not ask the provider, so a single-use refresh token
// is never spent where its successor cannot be stored.
func TestRefreshIsFencedByAWrite(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{Quirks: oauthserver.DiscordQuirks}, nil)
	f.connect("c")
	f.clock.advance(time.Hour) // the access token has expired
	before := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)

	_, err := f.b.oauthAccessToken(context.Background(), deposedStorage{f.s}, "c")
	if err == nil || !strings.Contains(err.Error(), "provider was not asked") {
		t.Fatalf("refresh on a node that cannot write: %v", err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - before; n != 0 {
		t.Fatalf("the deposed node sent %d refreshes to the provider", n)
	}
	// The active node refreshes with the stored, unspent token.
	if _, err := f.b.oauthAccessToken(context.Background(), f.s, "c"); err != nil {
		t.Fatalf("refresh on the active node: %v", err)
	}
	if rec, _ := getRefreshRecord(context.Background(), f.s, "c"); rec != nil {
		t.Errorf("a completed refresh left its record: %+v", rec)
	}
}

// TestRefreshInFlightOnAnotherNodeIsLeftAlone: a new leader does not spend
// the refresh token another node sent a moment ago.
func TestRefreshInFlightOnAnotherNodeIsLeftAlone(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{Quirks: oauthserver.DiscordQuirks}, nil)
	f.connect("c")
	f.clock.advance(time.Hour)
	f.putRecord("c", "other-node", f.clock.now().Add(-10*time.Second))
	before := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)

	_, err := f.b.oauthAccessToken(context.Background(), f.s, "c")
	if err == nil || !strings.Contains(err.Error(), "another Vault node") {
		t.Fatalf("use while another node refreshes: %v", err)
	}
	if err := f.b.periodic(context.Background(), &logical.Request{Storage: f.s}); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - before; n != 0 {
		t.Fatalf("%d refreshes sent while another node's was in flight", n)
	}
}

// TestInterruptedRefreshIsRetriedOnce: a refresh whose answer never reached
// storage (the node died with it in flight) is retried once with the stored
// token after the time a refresh may take. A provider that rotated the
// token refuses it, and the credential says what happened; one that did
// not answers, and nothing is lost.
func TestInterruptedRefreshIsRetriedOnce(t *testing.T) {
	for _, c := range []struct {
		name      string
		quirks    oauthserver.Quirks
		reconnect bool
	}{
		{"single-use refresh tokens", oauthserver.DiscordQuirks, true},
		{"reusable refresh tokens", oauthserver.GoogleQuirks, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newOAuthFixture(t, oauthserver.Options{Quirks: c.quirks}, nil)
			f.connect("c")
			ctx := context.Background()
			cred := f.cred("c")
			// The lost answer: the provider refreshed, storage never heard.
			svc, app, _, err := f.b.oauthContext(ctx, f.s, cred)
			if err != nil {
				t.Fatal(err)
			}
			if _, perr := f.b.requestRefresh(ctx, svc, app, cred.OAuth); perr != nil {
				t.Fatal(perr)
			}
			f.putRecord("c", "dead-node", f.clock.now())
			before := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken)

			// Within the flight time nothing happens; after it, one retry.
			f.clock.advance(time.Minute)
			f.tick()
			if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - before; n != 0 {
				t.Fatalf("%d refreshes before the record aged", n)
			}
			f.clock.advance(2 * time.Minute)
			f.tick()
			f.tick()
			if n := f.srv.TokenCallsFor(oauthserver.GrantRefreshToken) - before; n != 1 {
				t.Fatalf("%d recovery refreshes, want exactly 1", n)
			}
			got := f.cred("c")
			if got.OAuth.ReconnectRequired != c.reconnect {
				t.Fatalf("reconnect required = %v (%s)", got.OAuth.ReconnectRequired, got.OAuth.RefreshError)
			}
			if c.reconnect && !strings.Contains(got.StateReason, "never stored its answer") {
				t.Errorf("the reason does not say what happened: %q", got.StateReason)
			}
			if rec, _ := getRefreshRecord(ctx, f.s, "c"); rec != nil {
				t.Errorf("the record is still there: %+v", rec)
			}
		})
	}
}

func (f *oauthFixture) putRecord(name, node string, at time.Time) {
	f.t.Helper()
	e, err := logical.StorageEntryJSON(refreshRecordPrefix+name, refreshRecord{
		Node: node, StartedAt: at.UTC(), From: tokenHash(f.cred(name).OAuth.RefreshToken), Mode: "scheduled",
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.s.Put(context.Background(), e); err != nil {
		f.t.Fatal(err)
	}
}

func (f *oauthFixture) tick() {
	f.t.Helper()
	if err := f.b.periodic(context.Background(), &logical.Request{Storage: f.s}); err != nil {
		f.t.Fatal(err)
	}
}
