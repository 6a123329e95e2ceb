package credentials

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const configStorageKey = "config"

// Defaults for the mount's configuration; each is the value a fresh mount
// uses until an operator writes config.
const (
	defaultRefreshAhead     = 10 * time.Minute
	defaultWarnBefore       = 7 * 24 * time.Hour
	defaultBrokerTimeout    = 30 * time.Second
	defaultBrokerMaxBody    = 10 << 20 // 10 MiB each way
	defaultMaxTokenLifetime = time.Hour
	maxBrokerMaxBody        = 100 << 20

	defaultMailMaxBytes      = 4 << 20
	defaultMailMaxRecipients = 50
	defaultMailTimeout       = 30 * time.Second
	// maxMailMaxBytes stays under Vault's own request size, which carries
	// the message.
	maxMailMaxBytes      = 25 << 20
	maxMailMaxRecipients = 1000

	defaultHealthCheckInterval = 24 * time.Hour
	minHealthCheckInterval     = time.Minute
)

// mountConfig is the mount's configuration. It holds no secret.
type mountConfig struct {
	// RedirectURL is the portal's OAuth callback registered with providers.
	RedirectURL string `json:"redirect_url"`
	// ClientMetadataURL is where the portal serves its client ID metadata
	// document: the client ID of apps registered by CIMD.
	ClientMetadataURL string `json:"client_metadata_url,omitempty"`
	// RefreshAhead is how long before expiry an access token is refreshed.
	RefreshAhead time.Duration `json:"refresh_ahead"`
	// WarnBefore is how long before expiry a credential needs attention.
	WarnBefore time.Duration `json:"warn_before"`
	// BrokerTimeout bounds one brokered upstream call.
	BrokerTimeout time.Duration `json:"broker_timeout"`
	// BrokerMaxBody bounds a brokered request or response body, in bytes.
	BrokerMaxBody int64 `json:"broker_max_body"`
	// MaxTokenLifetime is assumed when a provider's token response has no
	// expires_in.
	MaxTokenLifetime time.Duration `json:"max_token_lifetime"`
	// Mail bounds one message sent through mail/<name>.
	MailMaxBytes      int64         `json:"mail_max_bytes"`
	MailMaxRecipients int           `json:"mail_max_recipients"`
	MailTimeout       time.Duration `json:"mail_timeout"`
	// ProxyOtherHosts is what the portal's forward proxy does with a
	// CONNECT to a host none of the agent's credentials serve: refuse it
	// (the default) or tunnel it through untouched.
	ProxyOtherHosts string `json:"proxy_other_hosts,omitempty"`
	// HealthCheckInterval is how often API keys and SMTP logins are
	// verified (health.go); zero: never.
	HealthCheckInterval time.Duration `json:"health_check_interval"`
}

// What the forward proxy does with hosts outside an agent's credentials.
const (
	proxyOtherHostsRefuse = "refuse"
	proxyOtherHostsTunnel = "tunnel"
)

func (c *mountConfig) proxyOtherHosts() string {
	if c.ProxyOtherHosts == "" {
		return proxyOtherHostsRefuse
	}
	return c.ProxyOtherHosts
}

func defaultConfig() *mountConfig {
	return &mountConfig{
		RefreshAhead:     defaultRefreshAhead,
		WarnBefore:       defaultWarnBefore,
		BrokerTimeout:    defaultBrokerTimeout,
		BrokerMaxBody:    defaultBrokerMaxBody,
		MaxTokenLifetime: defaultMaxTokenLifetime,

		MailMaxBytes:      defaultMailMaxBytes,
		MailMaxRecipients: defaultMailMaxRecipients,
		MailTimeout:       defaultMailTimeout,

		HealthCheckInterval: defaultHealthCheckInterval,
	}
}

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
		},
		Fields: map[string]*framework.FieldSchema{
			"redirect_url": {
				Type:        framework.TypeString,
				Description: "Absolute http(s) URL of the portal's OAuth callback, registered with each provider. Example: redirect_url=https://portal.acme.example/oauth/callback",
			},
			"client_metadata_url": {
				Type:        framework.TypeString,
				Description: "URL of the portal's client ID metadata document (<portal>/oauth/client.json): the client ID an app written with register=true gets from an authorization server that takes such documents (CIMD), instead of registering by RFC 7591. https, or http on a loopback address. Example: client_metadata_url=https://portal.acme.example/oauth/client.json",
			},
			"refresh_ahead": {
				Type:        framework.TypeDurationSecond,
				Description: "Refresh an OAuth access token when it expires within this long. Example: refresh_ahead=15m",
				Default:     int(defaultRefreshAhead.Seconds()),
			},
			"warn_before": {
				Type:        framework.TypeDurationSecond,
				Description: "A credential needs attention when it expires within this long. Example: warn_before=72h",
				Default:     int(defaultWarnBefore.Seconds()),
			},
			"broker_timeout": {
				Type:        framework.TypeDurationSecond,
				Description: "Time limit of one brokered call to a service. Example: broker_timeout=60s",
				Default:     int(defaultBrokerTimeout.Seconds()),
			},
			"broker_max_body": {
				Type:        framework.TypeInt,
				Description: "Largest brokered request or response body, in bytes. Example: broker_max_body=20971520",
				Default:     defaultBrokerMaxBody,
			},
			"health_check_interval": {
				Type:        framework.TypeDurationSecond,
				Description: "How often each API key and SMTP login is verified by the engine (its service's verify call, or an SMTP login), each credential at its own jittered time, a few at a time; a refusal makes it need attention, a success after one makes it active again. A credential never checked is checked soon after it is stored. 0 turns the checks off; at least 1m otherwise. Example: health_check_interval=6h",
				Default:     int(defaultHealthCheckInterval.Seconds()),
			},
			"max_token_lifetime": {
				Type:        framework.TypeDurationSecond,
				Description: "Lifetime assumed for an access token whose response has no expires_in. Example: max_token_lifetime=30m",
				Default:     int(defaultMaxTokenLifetime.Seconds()),
			},
			"mail_max_bytes": {
				Type:        framework.TypeInt,
				Description: fmt.Sprintf("Largest message mail/<name> sends, attachments included, in bytes (at most %d). Example: mail_max_bytes=10485760", maxMailMaxBytes),
				Default:     defaultMailMaxBytes,
			},
			"mail_max_recipients": {
				Type:        framework.TypeInt,
				Description: fmt.Sprintf("Most recipients (to, cc and bcc together) of one message (at most %d). Example: mail_max_recipients=100", maxMailMaxRecipients),
				Default:     defaultMailMaxRecipients,
			},
			"mail_timeout": {
				Type:        framework.TypeDurationSecond,
				Description: "Time limit of one submission to an SMTP server. Example: mail_timeout=45s",
				Default:     int(defaultMailTimeout.Seconds()),
			},
			"proxy_other_hosts": {
				Type:          framework.TypeString,
				Description:   "What the portal's forward proxy does with a CONNECT to a host none of the agent's credentials serve: refuse (403) or tunnel (passed through untouched: no credential, no interception, the dial guard still applies). Agents read it at agent-settings. Example: proxy_other_hosts=tunnel",
				Default:       proxyOtherHostsRefuse,
				AllowedValues: []interface{}{proxyOtherHostsRefuse, proxyOtherHostsTunnel},
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathConfigRead,
				Summary:  "Read the mount's configuration.",
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathConfigWrite,
				Summary:  "Change the mount's configuration; fields left out keep their value.",
			},
		},
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}, {
		Pattern: "agent-settings",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "credentials",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathAgentSettingsRead,
				Summary:  "Read the org's settings that agents' front doors apply.",
			},
		},
		HelpSynopsis:    pathAgentSettingsHelpSyn,
		HelpDescription: pathAgentSettingsHelpDesc,
	}}
}

// pathAgentSettingsRead answers the few settings agents' tokens may read:
// the portal's front doors apply them with the agent's token.
func (b *backend) pathAgentSettingsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{"proxy_other_hosts": cfg.proxyOtherHosts()}}, nil
}

const pathAgentSettingsHelpSyn = `The org's settings agents' front doors apply; readable by agents.`

const pathAgentSettingsHelpDesc = `
Answers proxy_other_hosts (see config): what the portal's forward proxy does
with a CONNECT to a host none of the agent's credentials serve. Agents'
policies may read this path and nothing else of the mount's configuration.
`

// getConfig returns the stored configuration, or the defaults when none was
// written.
func (b *backend) getConfig(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	cfg := defaultConfig()
	entry, err := s.Get(ctx, configStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if entry == nil {
		return cfg, nil
	}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	return cfg, nil
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"redirect_url":          cfg.RedirectURL,
		"client_metadata_url":   cfg.ClientMetadataURL,
		"refresh_ahead":         int64(cfg.RefreshAhead.Seconds()),
		"warn_before":           int64(cfg.WarnBefore.Seconds()),
		"broker_timeout":        int64(cfg.BrokerTimeout.Seconds()),
		"broker_max_body":       cfg.BrokerMaxBody,
		"max_token_lifetime":    int64(cfg.MaxTokenLifetime.Seconds()),
		"mail_max_bytes":        cfg.MailMaxBytes,
		"mail_max_recipients":   cfg.MailMaxRecipients,
		"mail_timeout":          int64(cfg.MailTimeout.Seconds()),
		"proxy_other_hosts":     cfg.proxyOtherHosts(),
		"health_check_interval": int64(cfg.HealthCheckInterval.Seconds()),
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := unknownFields(req, d); err != nil {
		return nil, err
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	if v, ok := d.GetOk("redirect_url"); ok {
		raw := v.(string)
		if raw != "" {
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return nil, userErrorf("redirect_url must be an absolute http or https URL")
			}
			if u.Fragment != "" {
				return nil, userErrorf("redirect_url must not have a fragment")
			}
		}
		cfg.RedirectURL = raw
	}
	if v, ok := d.GetOk("client_metadata_url"); ok {
		raw := v.(string)
		if raw != "" {
			u, err := url.Parse(raw)
			loopback := err == nil && u.Scheme == "http" && (u.Hostname() == "127.0.0.1" || u.Hostname() == "::1" || u.Hostname() == "localhost")
			if err != nil || (u.Scheme != "https" && !loopback) || u.Host == "" || u.Path == "" || u.Path == "/" || u.RawQuery != "" || u.Fragment != "" {
				return nil, userErrorf("client_metadata_url must be an https URL with a path and no query or fragment (http only on a loopback address), e.g. https://portal.acme.example/oauth/client.json")
			}
		}
		cfg.ClientMetadataURL = raw
	}
	durations := []struct {
		field string
		dst   *time.Duration
	}{
		{"refresh_ahead", &cfg.RefreshAhead},
		{"warn_before", &cfg.WarnBefore},
		{"broker_timeout", &cfg.BrokerTimeout},
		{"max_token_lifetime", &cfg.MaxTokenLifetime},
		{"mail_timeout", &cfg.MailTimeout},
	}
	for _, f := range durations {
		if v, ok := d.GetOk(f.field); ok {
			secs := v.(int)
			if secs <= 0 {
				return nil, userErrorf("%s must be a positive duration", f.field)
			}
			*f.dst = time.Duration(secs) * time.Second
		}
	}
	if v, ok := d.GetOk("health_check_interval"); ok {
		every := time.Duration(v.(int)) * time.Second
		if every != 0 && every < minHealthCheckInterval {
			return nil, userErrorf("health_check_interval must be 0 (off) or at least %s", minHealthCheckInterval)
		}
		cfg.HealthCheckInterval = every
	}
	if v, ok := d.GetOk("broker_max_body"); ok {
		n := int64(v.(int))
		if n <= 0 || n > maxBrokerMaxBody {
			return nil, userErrorf("broker_max_body must be between 1 and %d bytes", maxBrokerMaxBody)
		}
		cfg.BrokerMaxBody = n
	}
	if v, ok := d.GetOk("mail_max_bytes"); ok {
		n := int64(v.(int))
		if n <= 0 || n > maxMailMaxBytes {
			return nil, userErrorf("mail_max_bytes must be between 1 and %d bytes", maxMailMaxBytes)
		}
		cfg.MailMaxBytes = n
	}
	if v, ok := d.GetOk("proxy_other_hosts"); ok {
		mode := v.(string)
		if mode != proxyOtherHostsRefuse && mode != proxyOtherHostsTunnel {
			return nil, userErrorf("proxy_other_hosts must be refuse or tunnel, not %q", mode)
		}
		cfg.ProxyOtherHosts = mode
	}
	if v, ok := d.GetOk("mail_max_recipients"); ok {
		n := v.(int)
		if n <= 0 || n > maxMailMaxRecipients {
			return nil, userErrorf("mail_max_recipients must be between 1 and %d", maxMailMaxRecipients)
		}
		cfg.MailMaxRecipients = n
	}

	entry, err := logical.StorageEntryJSON(configStorageKey, cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("storing config: %w", err)
	}
	return nil, nil
}

// unknownFields names the request fields the path does not declare, so a
// typo is refused instead of silently ignored.
func unknownFields(req *logical.Request, d *framework.FieldData) error {
	var unknown []string
	for k := range req.Data {
		if _, ok := d.Schema[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return userErrorf("unknown field(s): %s", strings.Join(unknown, ", "))
}

const pathConfigHelpSyn = `Configure the organization's credentials mount.`

const pathConfigHelpDesc = `
The mount's settings: the portal's OAuth callback URL (redirect_url), how long
before expiry OAuth access tokens are refreshed (refresh_ahead, default 10m),
how long before expiry a credential is flagged as needing attention
(warn_before, default 7d), the broker's limits per call (broker_timeout,
broker_max_body), the bounds of one message sent through mail/<name>
(mail_max_bytes, mail_max_recipients, mail_timeout) and the lifetime assumed for access tokens whose provider
does not say (max_token_lifetime). Nothing here is secret.
`
