package credentials

import (
	"context"
	"crypto/rsa"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/clankteam/credentials/plugin/provider"
)

// GitHub App credentials: a file credential of a github_app service holds
// the app's private key; the broker injects installation tokens minted
// with it on use (1 hour, cached until shortly before expiry), optionally
// narrowed to repositories and permissions. The key never leaves Vault.

var (
	githubAppIDPattern  = regexp.MustCompile(`^([0-9]{1,20}|Iv[0-9A-Za-z.]{1,40})$`)
	githubRepoPattern   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	githubPermPattern   = regexp.MustCompile(`^[a-z_]{1,64}$`)
	githubPermissionSet = map[string]bool{"read": true, "write": true, "admin": true}
)

const maxGitHubRepositories = 500

// applyGitHubAppFields checks a GitHub App key credential's fields; other
// file credentials have none.
func applyGitHubAppFields(d *framework.FieldData, svc *service, c *credential) error {
	fields := []string{"app_id", "installation_id", "repositories", "permissions"}
	if !svc.GitHubApp {
		for _, f := range fields {
			if _, ok := d.GetOk(f); ok {
				return userErrorf("%s is a field of GitHub App credentials only (a service with github_app)", f)
			}
		}
		return nil
	}
	gh := &githubAppSettings{}
	if c.GitHubApp != nil {
		*gh = *c.GitHubApp
	}
	if v, ok := d.GetOk("app_id"); ok {
		gh.AppID = strings.TrimSpace(v.(string))
		if !githubAppIDPattern.MatchString(gh.AppID) {
			return userErrorf("app_id must be the GitHub App's numeric ID or its client ID (Iv…)")
		}
	}
	if v, ok := d.GetOk("installation_id"); ok {
		gh.InstallationID = int64(v.(int))
		if gh.InstallationID <= 0 {
			return userErrorf("installation_id must be a positive number")
		}
	}
	if v, ok := d.GetOk("repositories"); ok {
		var repos []string
		for _, r := range v.([]string) {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			if !githubRepoPattern.MatchString(r) {
				return userErrorf("repositories: %q is not a repository name (without the owner)", r)
			}
			repos = append(repos, r)
		}
		if len(repos) > maxGitHubRepositories {
			return userErrorf("repositories names at most %d", maxGitHubRepositories)
		}
		sort.Strings(repos)
		gh.Repositories = repos
	}
	if v, ok := d.GetOk("permissions"); ok {
		perms := map[string]string{}
		for k, level := range v.(map[string]string) {
			if !githubPermPattern.MatchString(k) || !githubPermissionSet[level] {
				return userErrorf("permissions: %q=%q is not a permission name with read, write or admin", k, level)
			}
			perms[k] = level
		}
		gh.Permissions = perms
	}
	if gh.AppID == "" || gh.InstallationID == 0 {
		return userErrorf("app_id and installation_id are required for GitHub App credentials")
	}
	if _, err := githubAppKey(c.File); err != nil {
		return userErrorf("file must be the GitHub App's private key (PEM, RSA), as GitHub issues it")
	}
	c.GitHubApp = gh
	return nil
}

func githubAppKey(file []byte) (*rsa.PrivateKey, error) {
	k, err := parsePrivateKey(string(file))
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("not an RSA key")
	}
	return rk, nil
}

// githubAppToken is an installation token of GitHub App credential c.
func (b *backend) githubAppToken(ctx context.Context, svc *service, c *credential) (string, error) {
	gh := c.GitHubApp
	if gh == nil || len(svc.BaseURLs) == 0 {
		return "", userErrorf("credential %s has no GitHub App installation: write its app_id and installation_id", c.Name)
	}
	perms := make([]string, 0, len(gh.Permissions))
	for k, v := range gh.Permissions {
		perms = append(perms, k+"="+v)
	}
	sort.Strings(perms)
	// The key's hash is in the cache key: a new key mints anew.
	key := strings.Join([]string{c.Name, tokenHash(string(c.File)), gh.AppID, fmt.Sprint(gh.InstallationID), strings.Join(gh.Repositories, ","), strings.Join(perms, ",")}, "\x00")
	t, err := b.mintCached(ctx, &b.oauth.appTokens, key, func(ctx context.Context) (*provider.Token, error) {
		rk, err := githubAppKey(c.File)
		if err != nil {
			return nil, fmt.Errorf("credential %s: the key cannot be used", c.Name)
		}
		tok, pe := b.oauth.provider.GitHubAppToken(ctx, provider.GitHubInstallation{
			APIURL: svc.BaseURLs[0], AppID: gh.AppID, InstallationID: gh.InstallationID, Key: rk,
			Repositories: gh.Repositories, Permissions: gh.Permissions,
		})
		if pe != nil {
			b.logger.Warn("minting an installation token failed", "name", c.Name, "status", pe.Status)
			return nil, fmt.Errorf("credential %s: %w", c.Name, pe)
		}
		b.logger.Info("installation token minted", "name", c.Name, "installation", gh.InstallationID)
		return tok, nil
	})
	return t.token, err
}
