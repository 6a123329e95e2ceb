package portal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/clankteam/credentials/internal/contract"
)

// pluginType is the engine's type name, as Vault reports it for a mount.
const pluginType = "credentials"

// newVaultBase builds the client every per-request client is cloned from.
// It holds no token: a VAULT_TOKEN in the portal's environment is dropped,
// so no request can ever run with anything but the person's own token.
func newVaultBase(addr string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("portal: vault client: %w", cfg.Error)
	}
	cfg.Address = addr
	// One retry, and only of a request Vault proves it never ran (a
	// leader change, leader.go): a retried write that had run could start
	// a second OAuth connect.
	cfg.MaxRetries = 1
	cfg.CheckRetry = retryNeverRan
	cfg.MinRetryWait, cfg.MaxRetryWait = leaderRetryWait, leaderRetryWait
	cfg.Timeout = 30 * time.Second
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("portal: vault client: %w", err)
	}
	c.ClearToken()
	c.SetCloneToken(false)
	return c, nil
}

// vault is one request's view of Vault, with one person's (or agent's)
// token. It shares the base client's connection pool.
type vault struct {
	c *api.Client
}

func (s *Server) vaultFor(token string) (*vault, error) {
	c, err := s.vaultBase.Clone()
	if err != nil {
		return nil, fmt.Errorf("cloning vault client: %w", err)
	}
	c.SetToken(token)
	return &vault{c: c}, nil
}

// vaultError classifies an error from Vault for the person: the status to
// answer with and a short message. Vault's 400 messages come from the
// engine's checks and never hold a secret, so people see them as they are.
func vaultError(err error) (int, string) {
	var re *api.ResponseError
	answered := errors.As(err, &re)
	switch {
	case answered && neverRan(re.StatusCode, re.Errors, nil):
		return http.StatusServiceUnavailable, leaderChangeText + "."
	case !answered && neverRan(0, nil, err):
		return http.StatusServiceUnavailable, "Vault cannot be reached; try again shortly."
	}
	if answered {
		msg := strings.Join(re.Errors, "; ")
		switch re.StatusCode {
		case http.StatusBadRequest:
			if msg == "" {
				msg = "Vault refused the request."
			}
			return http.StatusBadRequest, msg
		case http.StatusForbidden:
			return http.StatusForbidden, "You do not have permission to do this."
		case http.StatusNotFound:
			return http.StatusNotFound, "Not found."
		case http.StatusTooManyRequests:
			return http.StatusTooManyRequests, "Vault is busy; try again shortly."
		}
	}
	return http.StatusBadGateway, "Vault could not be reached or failed; try again."
}

// orgs lists the orgs the token can reach: mounts of the engine under
// orgs/ that Vault shows this token.
func (v *vault) orgs(ctx context.Context) ([]string, error) {
	sec, err := v.c.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts")
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	var out []string
	if sec == nil {
		return out, nil
	}
	mounts, _ := sec.Data["secret"].(map[string]any)
	for path, m := range mounts {
		info, _ := m.(map[string]any)
		if typ, _ := info["type"].(string); typ != pluginType {
			continue
		}
		if org, ok := contract.OrgOfMount(path); ok {
			out = append(out, org)
		}
	}
	sort.Strings(out)
	return out, nil
}

// credFilter is the list query the credentials page and API share.
type credFilter struct {
	Type, Q, Status, After string
	Limit                  int
}

// credSummary is one line of the credentials list, as the engine gives it.
type credSummary struct {
	Name         string `json:"name"`
	Type         string `json:"type"`
	Service      string `json:"service"`
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	LastUsedAt   string `json:"last_used_at"`
	ExpiresAt    string `json:"expires_at"`
	Description  string `json:"description"`
}

func (v *vault) listCreds(ctx context.Context, org string, f credFilter) ([]credSummary, error) {
	q := url.Values{"list": {"true"}}
	for k, val := range map[string]string{"type": f.Type, "q": f.Q, "status": f.Status, "after": f.After} {
		if val != "" {
			q.Set(k, val)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	sec, err := v.c.Logical().ReadWithDataWithContext(ctx, contract.Mount(org)+"/creds", q)
	if err != nil {
		return nil, fmt.Errorf("listing credentials of %s: %w", org, err)
	}
	out := []credSummary{}
	eachListed(sec, func(name string, info map[string]any) {
		out = append(out, credSummary{
			Name:         name,
			Type:         str(info["type"]),
			Service:      str(info["service"]),
			Status:       str(info["status"]),
			StatusReason: str(info["status_reason"]),
			LastUsedAt:   str(info["last_used_at"]),
			ExpiresAt:    str(info["expires_at"]),
			Description:  str(info["description"]),
		})
	})
	return out, nil
}

// eachListed calls each for every key of a LIST answer, in order, with the
// key's key_info (nil when the engine sent none).
func eachListed(sec *api.Secret, each func(name string, info map[string]any)) {
	if sec == nil {
		return
	}
	keys, _ := sec.Data["keys"].([]any)
	infos, _ := sec.Data["key_info"].(map[string]any)
	for _, k := range keys {
		name, _ := k.(string)
		info, _ := infos[name].(map[string]any)
		each(name, info)
	}
}

// read returns a path's data, nil when there is nothing there.
func (v *vault) read(ctx context.Context, path string) (map[string]any, error) {
	sec, err := v.c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	return sec.Data, nil
}

// write sends data to path and returns the response's data, if any.
func (v *vault) write(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	sec, err := v.c.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if sec == nil {
		return nil, nil
	}
	return sec.Data, nil
}

func (v *vault) delete(ctx context.Context, path string) (map[string]any, error) {
	sec, err := v.c.Logical().DeleteWithContext(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("deleting %s: %w", path, err)
	}
	if sec == nil {
		return nil, nil
	}
	return sec.Data, nil
}

// serviceInfo is a catalog entry as the list shows it.
type serviceInfo struct {
	Name        string   `json:"name"`
	DisplayName string   `json:"display_name"`
	Types       []string `json:"types"`
	Builtin     bool     `json:"builtin"`
}

func (v *vault) services(ctx context.Context, org string) ([]serviceInfo, error) {
	sec, err := v.c.Logical().ListWithContext(ctx, contract.Mount(org)+"/services")
	if err != nil {
		return nil, fmt.Errorf("listing services of %s: %w", org, err)
	}
	out := []serviceInfo{}
	eachListed(sec, func(name string, info map[string]any) {
		si := serviceInfo{Name: name, DisplayName: str(info["display_name"]), Builtin: info["builtin"] == true}
		if si.DisplayName == "" {
			si.DisplayName = name
		}
		si.Types = strs(info["types"])
		out = append(out, si)
	})
	sort.Slice(out, func(i, j int) bool {
		return strings.ToLower(out[i].DisplayName) < strings.ToLower(out[j].DisplayName)
	})
	return out, nil
}

// appInfo is an OAuth client registration, without its secret (the engine
// never returns it).
type appInfo struct {
	Name        string   `json:"name"`
	Service     string   `json:"service"`
	ClientID    string   `json:"client_id"`
	Scopes      []string `json:"scopes"`
	Description string   `json:"description"`
}

func (v *vault) apps(ctx context.Context, org string) ([]appInfo, error) {
	sec, err := v.c.Logical().ListWithContext(ctx, contract.Mount(org)+"/apps")
	if err != nil {
		return nil, fmt.Errorf("listing apps of %s: %w", org, err)
	}
	out := []appInfo{}
	eachListed(sec, func(name string, info map[string]any) {
		out = append(out, appInfo{
			Name: name, Service: str(info["service"]), ClientID: str(info["client_id"]),
			Scopes: strs(info["scopes"]), Description: str(info["description"]),
		})
	})
	return out, nil
}

// capabilities returns the token's capabilities on each path.
func (v *vault) capabilities(ctx context.Context, paths ...string) (map[string][]string, error) {
	sec, err := v.c.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": paths})
	if err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	out := map[string][]string{}
	if sec == nil {
		return out, nil
	}
	for _, p := range paths {
		out[p] = strs(sec.Data[p])
	}
	return out, nil
}

// can says whether caps allow op (root allows everything).
func can(caps []string, op string) bool {
	for _, c := range caps {
		if c == op || c == "root" {
			return true
		}
	}
	return false
}

func credPath(org, name string) string { return contract.Mount(org) + "/creds/" + name }

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
