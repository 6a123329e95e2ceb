package credentials

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/clankteam/credentials/internal/contract"
)

// Statuses a credential can have; the first three are derived on read from
// what is stored and the clock.
const (
	statusActive         = "active"
	statusNeedsAttention = "needs_attention"
	statusExpired        = "expired"
	statusDisconnected   = "disconnected"
)

var statuses = []string{statusActive, statusNeedsAttention, statusExpired, statusDisconnected}

const credStoragePrefix = "creds/"

func credStorageKey(name string) string { return credStoragePrefix + name }

// validateCredName allows names that are safe as one path segment anywhere:
// in Vault paths, portal URLs and storage keys.
func validateCredName(name string) error {
	if !contract.ValidCredName(name) {
		return userErrorMsg(contract.CredNameRule)
	}
	return nil
}

// credential is one stored credential. The secret fields are never returned
// by any path; everything else is metadata.
type credential struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Service     string `json:"service"`
	Description string `json:"description,omitempty"`

	// Secrets, by type.
	APIKey   string `json:"api_key,omitempty"`
	Password string `json:"password,omitempty"`
	File     []byte `json:"file,omitempty"`
	// OAuth holds an oauth2 credential's grant.
	OAuth *oauthGrant `json:"oauth,omitempty"`

	// Metadata.
	KeyHint  string `json:"key_hint,omitempty"`
	Username string `json:"username,omitempty"`
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	// SMTP holds an SMTP credential's submission settings.
	SMTP     *smtpSettings `json:"smtp,omitempty"`
	Filename string        `json:"filename,omitempty"`
	// ServiceAccount describes a GCP service-account file, without its key.
	ServiceAccount *serviceAccountInfo `json:"service_account,omitempty"`
	// GitHubApp says which installation a GitHub App key's tokens are for.
	GitHubApp *githubAppSettings `json:"github_app,omitempty"`
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
}

// oauthGrant is an oauth2 credential's grant from its provider.
type oauthGrant struct {
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

// connected says whether the grant can produce access tokens.
func (g *oauthGrant) connected() bool {
	return g != nil && (g.RefreshToken != "" || g.AccessToken != "")
}

// smtpSettings are how mail/<name> submits with an SMTP credential.
type smtpSettings struct {
	// Security is "starttls" or "tls" (implicit).
	Security string `json:"security"`
	// AllowedSenders are addresses and @domains mail may be sent from;
	// empty allows any the server accepts.
	AllowedSenders []string `json:"allowed_senders,omitempty"`
}

// githubAppSettings are a GitHub App key's installation and narrowing.
type githubAppSettings struct {
	AppID          string            `json:"app_id"`
	InstallationID int64             `json:"installation_id"`
	Repositories   []string          `json:"repositories,omitempty"`
	Permissions    map[string]string `json:"permissions,omitempty"`
}

// serviceAccountInfo is what is shown of a GCP service-account key.
type serviceAccountInfo struct {
	ClientEmail  string `json:"client_email"`
	ProjectID    string `json:"project_id,omitempty"`
	PrivateKeyID string `json:"private_key_id,omitempty"`
	TokenURI     string `json:"token_uri"`
}

// credSummary is a credential's line in the inventory index: all LIST needs
// to filter and describe it, and no secret.
type credSummary struct {
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
	// ID is the credential's ID (see credential.ID).
	ID string `json:"id,omitempty"`
	// RefreshFailing is the error of the grant's failing refresh, and
	// TokenExpiry its access token's expiry: once that passes, the
	// credential needs attention whatever State says.
	RefreshFailing string    `json:"rf,omitempty"`
	TokenExpiry    time.Time `json:"te,omitzero"`
}

func (c *credential) summary() credSummary {
	sum := credSummary{
		Type:         c.Type,
		Service:      c.Service,
		Description:  c.Description,
		App:          c.App,
		State:        c.State,
		StateReason:  c.StateReason,
		ExpiresAt:    c.ExpiresAt,
		LastUsedAt:   c.LastUsedAt,
		NotConnected: c.Type == typeOAuth2 && !c.ClientCredentials && !c.OAuth.connected() && c.State != statusDisconnected,
		ID:           c.ID,
	}
	if g := c.OAuth; g != nil && g.RefreshFailures > 0 && !g.ReconnectRequired {
		sum.RefreshFailing, sum.TokenExpiry = g.RefreshError, g.Expiry
	}
	return sum
}

// status derives the status a person sees, with its reason, at time now.
func (s credSummary) status(now time.Time, warnBefore time.Duration) (string, string) {
	switch {
	case s.State == statusDisconnected:
		return statusDisconnected, s.StateReason
	case s.ExpiresAt != nil && !now.Before(*s.ExpiresAt):
		return statusExpired, "expired on " + s.ExpiresAt.UTC().Format("2006-01-02")
	case s.NotConnected:
		return statusNeedsAttention, "not connected yet"
	case s.State == statusNeedsAttention:
		return statusNeedsAttention, s.StateReason
	case s.RefreshFailing != "" && !s.TokenExpiry.IsZero() && !now.Before(s.TokenExpiry):
		// Derived, not stored: the access token ran out while the provider
		// still fails, with no write to mark the moment.
		return statusNeedsAttention, "refresh failing and the access token expired: " + s.RefreshFailing
	case s.ExpiresAt != nil && s.ExpiresAt.Sub(now) <= warnBefore:
		return statusNeedsAttention, "expires " + humanIn(s.ExpiresAt.Sub(now))
	}
	return statusActive, ""
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

// getCredential reads a credential; nil when there is none.
func getCredential(ctx context.Context, s logical.Storage, name string) (*credential, error) {
	entry, err := s.Get(ctx, credStorageKey(name))
	if err != nil {
		return nil, fmt.Errorf("reading credential %s: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	c := new(credential)
	if err := entry.DecodeJSON(c); err != nil {
		return nil, fmt.Errorf("decoding credential %s: %w", name, err)
	}
	return c, nil
}

// saveCredential stores c and its index line. The caller holds the
// credential's lock. A pending marker written first and removed last lets
// the index be repaired if the process dies between the two writes.
func (b *backend) saveCredential(ctx context.Context, s logical.Storage, c *credential) error {
	if err := b.index.markPending(ctx, s, c.Name); err != nil {
		return err
	}
	c.Revision++
	entry, err := logical.StorageEntryJSON(credStorageKey(c.Name), c)
	if err != nil {
		return fmt.Errorf("encoding credential %s: %w", c.Name, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing credential %s: %w", c.Name, err)
	}
	if err := b.index.put(ctx, s, c.Name, c.summary()); err != nil {
		return err
	}
	return b.index.clearPending(ctx, s, c.Name)
}

// deleteCredential removes c, its index line and what hangs off it: its
// pending connect and its entry in the refresh schedule, so that nothing is
// left behind and a credential created again under the name starts clean.
// Those go first: when a later step fails the credential is still there,
// and deleting it again finishes the job. The caller holds c's lock.
func (b *backend) deleteCredential(ctx context.Context, s logical.Storage, c *credential) error {
	name := c.Name
	if err := s.Delete(ctx, pendingConnectPrefix+name); err != nil {
		return fmt.Errorf("deleting the pending connect of %s: %w", name, err)
	}
	if g := c.OAuth; g != nil && !g.RefreshDue.IsZero() {
		if err := s.Delete(ctx, dueEntryKey(dueBucket(g.RefreshDue), name)); err != nil {
			return fmt.Errorf("removing %s from the refresh schedule: %w", name, err)
		}
	}
	if err := b.deleteCredentialEntry(ctx, s, name); err != nil {
		// The credential may be left without its schedule entry: the next
		// tick files it again.
		b.oauth.sched.markUnfiled(name)
		return err
	}
	return nil
}

func (b *backend) deleteCredentialEntry(ctx context.Context, s logical.Storage, name string) error {
	if err := b.index.markPending(ctx, s, name); err != nil {
		return err
	}
	if err := s.Delete(ctx, credStorageKey(name)); err != nil {
		return fmt.Errorf("deleting credential %s: %w", name, err)
	}
	if err := b.index.remove(ctx, s, name); err != nil {
		return err
	}
	return b.index.clearPending(ctx, s, name)
}
