package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/clankteam/credentials/portal"
	"github.com/clankteam/credentials/portal/provision"
)

// TestWrongPasswordsCannotLockAPersonOut: with the lockout provisioning
// sets on the real Vault, an attacker who knows a user name and fails from
// one address is limited at that address before Vault's lockout, and the
// person signs in from theirs (before, ten wrong passwords locked them out
// from every address for 15 minutes).
func TestWrongPasswordsCannotLockAPersonOut(t *testing.T) {
	ctx := context.Background()
	org := newOrg(t, "signin-lockout")
	if err := provision.CreatePerson(ctx, vault.Client(), org, "victim", "victim-password-0123", provision.RoleMember); err != nil {
		t.Fatal(err)
	}
	tune, err := vault.Client().Logical().ReadWithContext(ctx, "sys/auth/userpass/tune")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tune.Data["user_lockout_threshold"]) != fmt.Sprint(provision.UserLockoutThreshold) ||
		fmt.Sprint(tune.Data["user_lockout_duration"]) != fmt.Sprint(int(provision.UserLockoutDuration.Seconds())) ||
		fmt.Sprint(tune.Data["user_lockout_counter_reset_duration"]) != fmt.Sprint(int(provision.UserLockoutDuration.Seconds())) {
		t.Errorf("userpass lockout: threshold %v, duration %v, counter reset %v", tune.Data["user_lockout_threshold"],
			tune.Data["user_lockout_duration"], tune.Data["user_lockout_counter_reset_duration"])
	}

	srv := servePortal(t, portal.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	signIn := func(from, password string) int {
		t.Helper()
		form := url.Values{"method": {"userpass"}, "username": {"victim"}, "password": {password}}
		req, _ := http.NewRequest(http.MethodPost, srv.URL()+"/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", srv.URL())
		req.Header.Set("X-Forwarded-For", from)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	limitedAt := 0
	for i := 1; i <= 12; i++ {
		if status := signIn("198.51.100.66", fmt.Sprint("guess-", i)); status == http.StatusTooManyRequests {
			limitedAt = i
			break
		}
	}
	if limitedAt == 0 || limitedAt > provision.UserLockoutThreshold {
		t.Fatalf("the attacker's address was limited at attempt %d (Vault locks at %d)", limitedAt, provision.UserLockoutThreshold)
	}
	if status := signIn("203.0.113.10", "victim-password-0123"); status != http.StatusSeeOther {
		t.Errorf("the person could not sign in from their own address: %d", status)
	}
}
