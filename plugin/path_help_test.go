package credentials

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestPathHelpIsComplete: every path has a synopsis and a description, and
// every request field says what it is, gives an example and, where the
// schema has them, its default and allowed values, so that `vault
// path-help` is enough to use the engine.
func TestPathHelpIsComplete(t *testing.T) {
	b, _, _ := getTestBackend(t)
	for _, p := range b.Paths {
		if strings.TrimSpace(p.HelpSynopsis) == "" || strings.TrimSpace(p.HelpDescription) == "" {
			t.Errorf("%s: no help synopsis or description", p.Pattern)
		}
		for name, f := range p.Fields {
			where := p.Pattern + " " + name
			switch {
			case f.Description == "":
				t.Errorf("%s: no description", where)
			case !strings.Contains(f.Description, "Example: "):
				t.Errorf("%s: no example: %q", where, f.Description)
			case strings.Contains(f.Description, "…"):
				t.Errorf("%s: an unfinished description: %q", where, f.Description)
			}
			if f.Default != nil && !strings.Contains(strings.ToLower(f.Description), "default") {
				t.Errorf("%s: the default %v is not said", where, f.Default)
			}
			for _, v := range f.AllowedValues {
				if !strings.Contains(f.Description, fmt.Sprint(v)) {
					t.Errorf("%s: the allowed value %v is not said", where, v)
				}
			}
		}
		for op, handler := range p.Operations {
			if handler.Properties().Summary == "" {
				t.Errorf("%s %s: no summary", p.Pattern, op)
			}
		}
	}
}

// TestPathHelpShowsDefaults: the help Vault prints for config carries the
// defaults as a person types them.
func TestPathHelpShowsDefaults(t *testing.T) {
	b, storage, _ := getTestBackend(t)
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.HelpOperation, Path: "config", Storage: storage})
	if err != nil {
		t.Fatal(err)
	}
	help, _ := resp.Data["help"].(string)
	for _, want := range []string{"Default: 10m.", "Default: 168h.", "Example: refresh_ahead=15m"} {
		if !strings.Contains(help, want) {
			t.Errorf("config help lacks %q:\n%s", want, help)
		}
	}
}
