package portal

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// Only a remote tool's call the SDK would take as it is passes; anything
// else is left to the SDK, which answers it (or its error) itself, with
// the body still there for it to read.
func TestReadPassRequest(t *testing.T) {
	tools := map[string]remoteTool{
		"tracker.create_issue": {name: "create_issue"},
		"tracker.upload":       {name: "upload", paramHeaders: true},
	}
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"tracker.create_issue","arguments":{"title":"x"}}}`
	const stateless = `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"tracker.create_issue","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	legacy := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}}
	statelessHeader := func(name string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}, "Mcp-Protocol-Version": {"2026-07-28"},
			"Mcp-Method": {"tools/call"}, "Mcp-Name": {name}}
		return h
	}
	with := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	for _, tc := range []struct {
		what   string
		method string
		header http.Header
		body   string
		pass   bool
	}{
		{"a remote tool's call", http.MethodPost, legacy, call, true},
		{"without a protocol header", http.MethodPost, with(legacy, "Mcp-Protocol-Version", ""), call, true},
		{"of the stateless protocol, its headers set", http.MethodPost, statelessHeader("tracker.create_issue"), stateless, true},
		{"a GET", http.MethodGet, legacy, call, false},
		{"another content type", http.MethodPost, with(legacy, "Content-Type", "text/plain"), call, false},
		{"an Accept without event streams", http.MethodPost, with(legacy, "Accept", "application/json"), call, false},
		{"an unknown protocol version", http.MethodPost, with(legacy, "Mcp-Protocol-Version", "2024-01-01"), call, false},
		{"a local tool", http.MethodPost, legacy, strings.Replace(call, "tracker.create_issue", "list_credentials", 1), false},
		{"another method", http.MethodPost, legacy, strings.Replace(call, "tools/call", "tools/list", 1), false},
		{"a notification (no id)", http.MethodPost, legacy, strings.Replace(call, `"id":1,`, "", 1), false},
		{"a fractional id", http.MethodPost, legacy, strings.Replace(call, `"id":1`, `"id":1.5`, 1), false},
		{"a batch", http.MethodPost, legacy, "[" + call + "]", false},
		{"a member name in other case", http.MethodPost, legacy, strings.Replace(call, `"method"`, `"Method"`, 1), false},
		{"arguments that are not an object", http.MethodPost, legacy, strings.Replace(call, `{"title":"x"}`, `[1]`, 1), false},
		{"a call asking for progress", http.MethodPost, legacy, strings.Replace(call, `"arguments"`, `"_meta":{"progressToken":"p"},"arguments"`, 1), true},
		{"asking for progress by a number", http.MethodPost, legacy, strings.Replace(call, `"arguments"`, `"_meta":{"progressToken":7},"arguments"`, 1), true},
		{"a progress token that is an object", http.MethodPost, legacy, strings.Replace(call, `"arguments"`, `"_meta":{"progressToken":{}},"arguments"`, 1), false},
		{"asking for progress of a tool whose schema names headers", http.MethodPost, legacy,
			strings.Replace(strings.Replace(call, "tracker.create_issue", "tracker.upload", 1), `"arguments"`, `"_meta":{"progressToken":"p"},"arguments"`, 1), false},
		{"stateless, asking for progress", http.MethodPost, statelessHeader("tracker.create_issue"),
			strings.Replace(stateless, `"_meta":{`, `"_meta":{"progressToken":"p",`, 1), false},
		{"stateless without Mcp-Name", http.MethodPost, with(statelessHeader("tracker.create_issue"), "Mcp-Name", ""), stateless, false},
		{"stateless naming another tool", http.MethodPost, statelessHeader("tracker.upload"), stateless, false},
		{"stateless without its _meta", http.MethodPost, statelessHeader("tracker.create_issue"), call, false},
		{"stateless, a tool whose schema names headers", http.MethodPost, statelessHeader("tracker.upload"),
			strings.Replace(stateless, "tracker.create_issue", "tracker.upload", 1), false},
	} {
		r, err := http.NewRequest(tc.method, "http://portal/mcp/acme", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header = tc.header
		req, ok := readPassRequest(r, peekBody(r), tools)
		if ok != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.what, ok, tc.pass)
			continue
		}
		if ok && (req.tool == "" || len(req.id) == 0) {
			t.Errorf("%s: read %+v", tc.what, req)
		}
		if !ok && tc.method == http.MethodPost && tc.header.Get("Content-Type") == "application/json" {
			left := make([]byte, len(tc.body)+1)
			n, _ := r.Body.Read(left)
			if string(left[:n]) != tc.body {
				t.Errorf("%s: the SDK is left %q, want the whole body", tc.what, left[:n])
			}
		}
	}
}

// The call's result is found in an event stream behind notifications and
// requests of the server's, in data split over lines; an error answer is
// the remote server's error; a stream without the result says so.
func TestResultInStream(t *testing.T) {
	long := strings.Repeat("x", 40<<10)
	for _, tc := range []struct {
		what, stream, want string
		err                error
	}{
		{"the result alone", "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"result\":{\"content\":[]}}\n\n", `{"content":[]}`, nil},
		{"behind a notification", "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n" +
			"id: 2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"result\":{\"a\":1}}\r\n\r\n", `{"a":1}`, nil},
		{"another call's answer first", "data: {\"jsonrpc\":\"2.0\",\"id\":\"portal-9\",\"result\":{\"b\":1}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"result\":{\"a\":2}}\n\n", `{"a":2}`, nil},
		{"data over two lines", "data: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\ndata: \"result\":{\"a\":3}}\n\n", `{"a":3}`, nil},
		{"a long line", "data: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"result\":{\"t\":\"" + long + "\"}}\n\n", `{"t":"` + long + `"}`, nil},
		{"no blank line at the end", "data: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"result\":{\"a\":4}}", `{"a":4}`, nil},
		{"an error", "data: {\"jsonrpc\":\"2.0\",\"id\":\"portal-1\",\"error\":{\"code\":-32602,\"message\":\"unknown tool\"}}\n\n", "", &jsonrpc.Error{}},
		{"no result", "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n", "", errNoResult},
	} {
		got, err := resultInEvents(bufio.NewReader(strings.NewReader(tc.stream)), "portal-1", nil)
		switch want := tc.err.(type) {
		case nil:
			if err != nil || string(got) != tc.want {
				t.Errorf("%s: %.80s, %v; want %.80s", tc.what, got, err, tc.want)
			}
		case *jsonrpc.Error:
			var e *jsonrpc.Error
			if !errors.As(err, &e) || e.Message != "unknown tool" {
				t.Errorf("%s: %v, want the server's error", tc.what, err)
			}
		default:
			if !errors.Is(err, want) {
				t.Errorf("%s: %v, want %v", tc.what, err, want)
			}
		}
	}
}

// A tool asking for input the broker cannot give is an error, not a result
// the agent would take for the tool's answer.
func TestResultOfInputRequired(t *testing.T) {
	_, err := resultOf([]byte(`{"jsonrpc":"2.0","id":"portal-1","result":{"resultType":"input_required","inputRequests":{}}}`), "portal-1")
	var e *jsonrpc.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v, want an error", err)
	}
}
