// Package store is how the engine keeps credentials: the stored record of
// each (with its secrets, which no path returns), its line in the inventory
// index, and the writes that keep the two in step.
package store

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/plugin/catalog"
)

// Statuses a credential can have; the first three are derived on read from
// what is stored and the clock.
const (
	StatusActive         = "active"
	StatusNeedsAttention = "needs_attention"
	StatusExpired        = "expired"
	StatusDisconnected   = "disconnected"
)

var Statuses = []string{StatusActive, StatusNeedsAttention, StatusExpired, StatusDisconnected}

// Prefix is where credentials are stored, one entry per name.
const Prefix = "creds/"

// Key is the storage key of credential name.
func Key(name string) string { return Prefix + name }

// Credential is one stored credential. The secret fields are never returned
// by any path; everything else is metadata.
type Credential struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Service     string `json:"service"`
	Description string `json:"description,omitempty"`

	// Secrets, by type.
	APIKey   string `json:"api_key,omitempty"`
	Password string `json:"password,omitempty"`
	File     []byte `json:"file,omitempty"`
	// OAuth holds an oauth2 credential's grant.
	OAuth *OAuthGrant `json:"oauth,omitempty"`

	// Metadata.
	KeyHint  string `json:"key_hint,omitempty"`
	Username string `json:"username,omitempty"`
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	// SMTP holds an SMTP credential's submission settings.
	SMTP     *SMTPSettings `json:"smtp,omitempty"`
	Filename string        `json:"filename,omitempty"`
	// ServiceAccount describes a GCP service-account file, without its key.
	ServiceAccount *ServiceAccountInfo `json:"service_account,omitempty"`
	// GitHubApp says which installation a GitHub App key's tokens are for.
	GitHubApp *GitHubAppSettings `json:"github_app,omitempty"`
	// App names the OAuth client registration (apps/<name>) of an oauth2
	// credential.
	App string `json:"app,omitempty"`
	// ClientCredentials: the app uses the client credentials grant, so the
	// credential has no grant to connect; tokens are minted on use.
	ClientCredentials bool `json:"client_credentials,omitempty"`

	// ExpiresAt is when the credential itself stops working, if known.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// State is the stored part of the status: active, needs_attention or
	// disconnected; expired and the expiry warning are derived.
	State       string    `json:"state"`
	StateReason string    `json:"state_reason,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// ID is given at creation and never reused: an agent granted this
	// credential records its ID, so a credential deleted and created
	// again under the same name is not the agent's to use. Credentials
	// from before IDs have none.
	ID         string    `json:"id,omitempty"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// LastUsedBy is the caller (Vault entity or token display name) of the
	// last use.
	LastUsedBy string `json:"last_used_by,omitempty"`
	// LastUsedByCaller is each recent caller's last use (at most
	// maxCallersKept callers).
	LastUsedByCaller map[string]time.Time `json:"callers,omitempty"`
	// Revision counts stored versions: each save adds one, so a lost
	// concurrent update would show as a gap.
	Revision uint64 `json:"revision"`
	// Announced is the status the org's webhooks were last told of
	// (store's statuses, or "expiring"); empty before the first.
	Announced string `json:"announced,omitempty"`
	// CheckedAt is when the engine last verified it (by a health check or
	// a verify call), reached or not.
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// OAuthGrant is an oauth2 credential's grant from its provider.
type OAuthGrant struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	Scopes       []string  `json:"scopes,omitempty"`
	// Account is who granted access (an email or login), for people to see.
	Account string `json:"account,omitempty"`
	// AccountID is the provider's stable ID of the account (sub): the
	// account the grant is; Account is its label for people.
	AccountID   string    `json:"account_id,omitempty"`
	ConnectedAt time.Time `json:"connected_at,omitzero"`
	// RefreshedAt is the last successful refresh, for keep-alive.
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	// RefreshDue is when the scheduler refreshes the grant next; the
	// grant's entry in the due index (refresh/due/) is filed under it.
	RefreshDue time.Time `json:"due,omitzero"`
	// RetryAt, after a failed refresh, is when to try again (backoff).
	RetryAt time.Time `json:"retry,omitzero"`
	// RefreshFailures counts failed refreshes since the last success.
	RefreshFailures int `json:"fails,omitempty"`
	// RefreshError says why the last refresh failed; never a secret.
	RefreshError string `json:"err,omitempty"`
	// FailedAt is when the last refresh failed.
	FailedAt time.Time `json:"failed_at,omitzero"`
	// ReconnectRequired: the provider refused the refresh token for good
	// (invalid_grant and its kin). The dead tokens are kept only so that
	// disconnect can still try to revoke them; they are never refreshed
	// or handed out again.
	ReconnectRequired bool `json:"reconnect,omitempty"`
}

// Connected says whether the grant can produce access tokens.
func (g *OAuthGrant) Connected() bool {
	return g != nil && (g.RefreshToken != "" || g.AccessToken != "")
}

// SMTPSettings are how mail/<name> submits with an SMTP credential.
type SMTPSettings struct {
	// Security is "starttls" or "tls" (implicit).
	Security string `json:"security"`
	// AllowedSenders are addresses and @domains mail may be sent from;
	// empty allows any the server accepts.
	AllowedSenders []string `json:"allowed_senders,omitempty"`
}

// GitHubAppSettings are a GitHub App key's installation and narrowing.
type GitHubAppSettings struct {
	AppID          string            `json:"app_id"`
	InstallationID int64             `json:"installation_id"`
	Repositories   []string          `json:"repositories,omitempty"`
	Permissions    map[string]string `json:"permissions,omitempty"`
}

// ServiceAccountInfo is what is shown of a GCP service-account key.
type ServiceAccountInfo struct {
	ClientEmail  string `json:"client_email"`
	ProjectID    string `json:"project_id,omitempty"`
	PrivateKeyID string `json:"private_key_id,omitempty"`
	TokenURI     string `json:"token_uri"`
}

// Summary is a credential's line in the inventory index: all LIST needs
// to filter and describe it, and no secret.
type Summary struct {
	Type        string     `json:"t"`
	Service     string     `json:"s"`
	Description string     `json:"d,omitempty"`
	App         string     `json:"a,omitempty"`
	State       string     `json:"st"`
	StateReason string     `json:"r,omitempty"`
	ExpiresAt   *time.Time `json:"e,omitempty"`
	LastUsedAt  time.Time  `json:"u,omitzero"`
	// NotConnected marks an oauth2 credential without a grant yet.
	NotConnected bool `json:"nc,omitempty"`
	// ID is the credential's ID (see Credential.ID).
	ID string `json:"id,omitempty"`
	// RefreshFailing is the error of the grant's failing refresh, and
	// TokenExpiry its access token's expiry: once that passes, the
	// credential needs attention whatever State says.
	RefreshFailing string    `json:"rf,omitempty"`
	TokenExpiry    time.Time `json:"te,omitzero"`
	// Announced is Credential.Announced, for the periodic pass that
	// announces what changed with the clock alone.
	Announced string `json:"an,omitempty"`
	// CheckedAt is Credential.CheckedAt, for the health checks' schedule.
	CheckedAt time.Time `json:"ck,omitzero"`
}

// Summary is c's line in the index.
func (c *Credential) Summary() Summary {
	sum := Summary{
		Type:         c.Type,
		Service:      c.Service,
		Description:  c.Description,
		App:          c.App,
		State:        c.State,
		StateReason:  c.StateReason,
		ExpiresAt:    c.ExpiresAt,
		LastUsedAt:   c.LastUsedAt,
		NotConnected: c.Type == catalog.TypeOAuth2 && !c.ClientCredentials && !c.OAuth.Connected() && c.State != StatusDisconnected,
		ID:           c.ID,
		Announced:    c.Announced,
		CheckedAt:    c.CheckedAt,
	}
	if g := c.OAuth; g != nil && g.RefreshFailures > 0 && !g.ReconnectRequired {
		sum.RefreshFailing, sum.TokenExpiry = g.RefreshError, g.Expiry
	}
	return sum
}

// Status derives the status a person sees, with its reason, at time now.
func (s Summary) Status(now time.Time, warnBefore time.Duration) (string, string) {
	switch {
	case s.State == StatusDisconnected:
		return StatusDisconnected, s.StateReason
	case s.ExpiresAt != nil && !now.Before(*s.ExpiresAt):
		return StatusExpired, "expired on " + s.ExpiresAt.UTC().Format("2006-01-02")
	case s.NotConnected:
		return StatusNeedsAttention, "not connected yet"
	case s.State == StatusNeedsAttention:
		return StatusNeedsAttention, s.StateReason
	case s.RefreshFailing != "" && !s.TokenExpiry.IsZero() && !now.Before(s.TokenExpiry):
		// Derived, not stored: the access token ran out while the provider
		// still fails, with no write to mark the moment.
		return StatusNeedsAttention, "refresh failing and the access token expired: " + s.RefreshFailing
	case s.ExpiresAt != nil && s.ExpiresAt.Sub(now) <= warnBefore:
		return StatusNeedsAttention, "expires " + humanIn(s.ExpiresAt.Sub(now))
	}
	return StatusActive, ""
}

// humanIn says how far away d is in words a person reads at a glance.
func humanIn(d time.Duration) string {
	// Rounded, not truncated: a key that expires 71h59m from now expires
	// "in 3 days" to a person.
	round := func(unit time.Duration) int { return int((d + unit/2) / unit) }
	switch {
	case d < time.Minute:
		return "in less than a minute"
	case d < time.Hour-30*time.Second:
		return plural(round(time.Minute), "minute")
	case d < 47*time.Hour+30*time.Minute:
		return plural(round(time.Hour), "hour")
	}
	return plural(round(24*time.Hour), "day")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "in 1 " + unit
	}
	return fmt.Sprintf("in %d %ss", n, unit)
}

// Get reads credential name; nil when there is none.
func Get(ctx context.Context, s logical.Storage, name string) (*Credential, error) {
	return ReadJSON[Credential](ctx, s, Key(name), "credential "+name)
}
