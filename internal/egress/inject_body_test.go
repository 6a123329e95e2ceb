package egress

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

const bodyKey = `xoxb-canary"\<&>`

func injectInto(t *testing.T, ctype, body string) (string, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://slack.com/api/chat.postMessage", strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if err := Inject(req, Injection{Style: StyleBody, Field: "token"}, Material{Secret: []byte(bodyKey)}); err != nil {
		return "", err
	}
	got, _ := io.ReadAll(req.Body)
	if req.ContentLength != int64(len(got)) {
		t.Fatalf("Content-Length %d for a body of %d", req.ContentLength, len(got))
	}
	again, _ := req.GetBody()
	if replay, _ := io.ReadAll(again); string(replay) != string(got) {
		t.Fatal("GetBody does not give the injected body again")
	}
	return string(got), nil
}

// TestBodyInjectionWritesOnlyTheDeclaredField: the secret replaces the
// declared field's value (a placeholder the agent put there, say), or is
// added when the field is absent; every other byte, placeholders in other
// fields included, goes on as the caller sent it.
func TestBodyInjectionWritesOnlyTheDeclaredField(t *testing.T) {
	const quoted = `"xoxb-canary\"\\<&>"`
	for _, c := range []struct{ name, ctype, in, want string }{
		{"json placeholder replaced", "application/json",
			`{"channel": "C1", "token" : "broker-cred-slack", "text": "broker-cred-slack"}`,
			`{"channel": "C1", "token" : ` + quoted + `, "text": "broker-cred-slack"}`},
		{"json nested field untouched", "application/json; charset=utf-8",
			`{"blocks":[{"token":"broker-cred-slack"}],"n":1.50}`,
			`{"blocks":[{"token":"broker-cred-slack"}],"n":1.50,"token":` + quoted + `}`},
		{"json empty object", "application/json", ` { } `, ` { "token":` + quoted + `} `},
		{"json empty body", "application/json", ``, `{"token":` + quoted + `}`},
		{"json non-string value replaced", "application/vnd.api+json", `{"token":{"a":[1,2]},"b":true}`, `{"token":` + quoted + `,"b":true}`},
		{"form placeholder replaced", "application/x-www-form-urlencoded",
			`channel=C1&token=broker-cred-slack&text=broker-cred-slack+hi`,
			`channel=C1&token=xoxb-canary%22%5C%3C%26%3E&text=broker-cred-slack+hi`},
		{"form field added", "application/x-www-form-urlencoded", `channel=C1`, `channel=C1&token=xoxb-canary%22%5C%3C%26%3E`},
		{"form empty", "application/x-www-form-urlencoded", ``, `token=xoxb-canary%22%5C%3C%26%3E`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := injectInto(t, c.ctype, c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("body\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

// TestBodyInjectionRefusesWhatItCannotWriteSafely: a second occurrence of
// the field, a body that is not one object or form, another content type
// or a compressed body are refused with a 400 that names the field, and
// the secret is in no message.
func TestBodyInjectionRefusesWhatItCannotWriteSafely(t *testing.T) {
	for _, c := range []struct{ name, ctype, in, says string }{
		{"json twice", "application/json", `{"token":"a","x":1,"token":"b"}`, "more than once"},
		{"json escaped twice", "application/json", `{"token":"a","\u0074oken":"b"}`, "more than once"},
		{"json array", "application/json", `[{"token":"a"}]`, "not one JSON object"},
		{"json two objects", "application/json", `{"a":1}{"b":2}`, "not one JSON object"},
		{"json broken", "application/json", `{"a":`, "not one JSON object"},
		{"form twice", "application/x-www-form-urlencoded", `token=a&token=b`, "more than once"},
		{"form broken", "application/x-www-form-urlencoded", `to%zzken=a`, "cannot be parsed"},
		{"text", "text/plain", `token=a`, "send a JSON object"},
		{"no type", "", `{"token":"a"}`, "send a JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := injectInto(t, c.ctype, c.in)
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, c.says) || !strings.Contains(e.Msg, `"token"`) {
				t.Fatalf("got %v, want a 400 saying %q about the token field", err, c.says)
			}
			if strings.Contains(e.Msg, "canary") {
				t.Fatal("the secret is in the message")
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPost, "https://slack.com/api/x", strings.NewReader("x"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	var e *Error
	if err := Inject(req, Injection{Style: StyleBody, Field: "token"}, Material{Secret: []byte(bodyKey)}); !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		t.Fatalf("a compressed body: %v", err)
	}
	req, _ = http.NewRequest(http.MethodPost, "https://slack.com/api/x", strings.NewReader(`{"a":"`+strings.Repeat("x", MaxInjectedBody)+`"}`))
	req.Header.Set("Content-Type", "application/json")
	if err := Inject(req, Injection{Style: StyleBody, Field: "token"}, Material{Secret: []byte(bodyKey)}); !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over the bound: %v", err)
	}
}
