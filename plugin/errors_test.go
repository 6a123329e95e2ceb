package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/egress"
	"github.com/clankteam/credentials/plugin/provider"
	"github.com/clankteam/credentials/testing/oauthserver"
)

func TestErrorResponse(t *testing.T) {
	storage := errors.New("storage: connection refused")
	cases := []struct {
		name   string
		err    error
		status int // 0: Vault's own status for the error (500, or its kind)
		msg    string
	}{
		{"user error", userErrorf("api_key must be %d-%d characters", 1, 8), http.StatusBadRequest, "api_key must be 1-8 characters"},
		{"wrapped user error", fmt.Errorf("creating x: %w", userErrorf("bad")), http.StatusBadRequest, "bad"},
		{"refusal with its own status", &egress.Error{Status: http.StatusBadGateway, Msg: "upstream closed"}, http.StatusBadGateway, "upstream closed"},
		{"provider refused the grant", &provider.Error{Kind: provider.GrantDead, Msg: "invalid_grant"}, http.StatusBadRequest, "invalid_grant"},
		{"provider down", &provider.Error{Kind: provider.Transient, Msg: "503"}, 0, "503"},
		{"storage failure", fmt.Errorf("reading app a: %w", storage), 0, "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := errorResponse(tc.err)
			switch {
			case tc.status == http.StatusBadRequest:
				if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.msg) {
					t.Fatalf("got (%v, %v), want a 400 saying %q", resp, err, tc.msg)
				}
			case tc.status != 0:
				var coded logical.HTTPCodedError
				if resp != nil || !errors.As(err, &coded) || coded.Code() != tc.status || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("got (%v, %v), want %d saying %q", resp, err, tc.status, tc.msg)
				}
			default:
				var coded logical.HTTPCodedError
				if resp != nil || err == nil || errors.As(err, &coded) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("got (%v, %v), want the error itself (Vault answers 500)", resp, err)
				}
			}
		})
	}
	if _, err := errorResponse(logical.ErrReadOnly); err != logical.ErrReadOnly {
		t.Fatalf("ErrReadOnly became %v: Vault must still see it to forward the request", err)
	}
}

// failingReads fails every read under prefix.
type failingReads struct {
	logical.Storage
	prefix string
}

func (f failingReads) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.HasPrefix(key, f.prefix) {
		return nil, errors.New("storage unavailable")
	}
	return f.Storage.Get(ctx, key)
}

// A storage failure while a write validates is the engine's failure (500),
// not a 400 telling the caller their input was wrong; nothing is stored.
func TestStorageFailureIsNotTheCallersMistake(t *testing.T) {
	f := newOAuthFixture(t, oauthserver.Options{}, nil)
	f.connect("other")
	rt := f.cred("other").OAuth.RefreshToken
	s := failingReads{Storage: f.s, prefix: appStoragePrefix}
	resp, err := doErr(f.b, s, logical.CreateOperation, "creds/imported", map[string]interface{}{
		"type": "oauth2", "service": "idp", "app": "idp-app", "refresh_token": rt,
	})
	if err == nil || (resp != nil && resp.IsError()) {
		t.Fatalf("got (%v, %v), want a server error", resp, err)
	}
	if !strings.Contains(err.Error(), "storage unavailable") {
		t.Errorf("the error %q does not say what failed", err)
	}
	if c, _ := getCredential(context.Background(), f.s, "imported"); c != nil {
		t.Fatal("a credential was stored by a write that failed")
	}
	// The same write with a wrong app is the caller's mistake.
	resp = do(t, f.b, f.s, logical.CreateOperation, "creds/imported", map[string]interface{}{
		"type": "oauth2", "service": "idp", "app": "no-such-app", "refresh_token": rt,
	})
	wantError(t, resp, `app "no-such-app" does not exist`)
}
