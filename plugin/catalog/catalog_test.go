package catalog

import (
	"strings"
	"testing"

	"github.com/clankteam/credentials/internal/egress"
)

func TestValidateNamesTheBadField(t *testing.T) {
	base := func() *Service {
		return &Service{
			Name: "acme", Types: []string{TypeAPIKey}, BaseURLs: []string{"https://api.acme.test"},
			Injection: map[string]egress.Injection{TypeAPIKey: {Style: egress.StyleHeader, Header: "Authorization", Format: "Bearer {secret}"}},
		}
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("a good service: %v", err)
	}
	cases := []struct {
		change func(*Service)
		want   string
	}{
		{func(s *Service) { s.Name = "Acme!" }, "name"},
		{func(s *Service) { s.Types = []string{"token"} }, `unknown credential type "token"`},
		{func(s *Service) { s.BaseURLs = []string{"https://a.*.test"} }, "wildcard only as its first label"},
		{func(s *Service) { s.BaseURLs = []string{"https://api.acme.test/?q=1"} }, "no query"},
		{func(s *Service) {
			s.Injection[TypeAPIKey] = egress.Injection{Style: egress.StyleHeader, Header: "X-Key", Format: "no placeholder"}
		}, "{secret}"},
		{func(s *Service) { s.Injection[TypePassword] = egress.Injection{Style: egress.StyleBasic} }, "a type the service does not take"},
		{func(s *Service) { s.Types = append(s.Types, TypeOAuth2) }, "oauth.auth_url and oauth.token_url"},
		{func(s *Service) {
			s.Verify = &VerifyCall{Method: "DELETE", URL: "https://api.acme.test", ExpectStatus: 200}
		}, "verify.method"},
		{func(s *Service) { s.Description = "line\x00break" }, "description"},
		{func(s *Service) { s.DocsURL = "http://docs.acme.test" }, "docs_url must be an https URL"},
	}
	for _, tc := range cases {
		s := base()
		tc.change(s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error saying %q", err, tc.want)
		}
	}
}

func TestBuiltinPresetsAreComplete(t *testing.T) {
	for name, svc := range Builtin {
		if svc.Name != name || !svc.Builtin || svc.DisplayName == "" {
			t.Errorf("preset %s: name %q, builtin %v, display name %q", name, svc.Name, svc.Builtin, svc.DisplayName)
		}
		for _, typ := range svc.Types {
			if typ == TypeOAuth2 {
				continue // the OAuth grant's token goes in as a bearer header
			}
			if _, ok := svc.Injection[typ]; !ok && len(svc.BaseURLs) > 0 && !svc.GitHubApp && !svc.ServiceAccountJSON {
				t.Errorf("preset %s takes %s but does not say how to inject it", name, typ)
			}
		}
	}
}
