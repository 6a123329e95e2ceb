package egress

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// A body injection puts the secret into one top-level field of a JSON
// object or of a form (Slack's token=, the JSON-RPC APIs that take a key
// beside the method). Only that field is written: the caller's other
// fields, and any placeholder standing anywhere else in the body, go on
// byte for byte. The field may stand once; a body naming it twice is
// refused, since which one the service reads is its own choice.

// MaxInjectedBody bounds a body the secret is written into: it is read
// whole to be rewritten, where every other body streams.
const MaxInjectedBody = 4 << 20

// injectBody writes secret into req's body at field.
func injectBody(req *http.Request, field string, secret []byte) error {
	if req.Header.Get("Content-Encoding") != "" {
		return BadRequest("this credential goes into the body's %q field, so the body cannot be compressed (Content-Encoding)", field)
	}
	ctype, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(req.Body, MaxInjectedBody+1))
		req.Body.Close()
		if err != nil {
			return err
		}
		if len(body) > MaxInjectedBody {
			return &Error{Status: http.StatusRequestEntityTooLarge, Permanent: true, Msg: "a body the credential is written into is limited to 4 MiB"}
		}
	}
	var out []byte
	var err error
	switch {
	case ctype == "application/json" || strings.HasSuffix(ctype, "+json"):
		out, err = jsonWithField(body, field, secret)
	case ctype == "application/x-www-form-urlencoded":
		out, err = formWithField(body, field, secret)
	default:
		return BadRequest("this credential goes into the body's %q field: send a JSON object (Content-Type: application/json) or a form (application/x-www-form-urlencoded)", field)
	}
	clear(body)
	if err != nil {
		return err
	}
	req.Body = io.NopCloser(bytes.NewReader(out))
	req.ContentLength = int64(len(out))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }
	return nil
}

// jsonWithField returns body, a JSON object, with field's value replaced by
// secret as a JSON string, or the field added at the end when it is absent.
// An empty body becomes an object of that field alone.
func jsonWithField(body []byte, field string, secret []byte) ([]byte, error) {
	value, err := jsonStringOf(secret)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		name, _ := jsonStringOf([]byte(field))
		return append(append(append(append([]byte("{"), name...), ':'), value...), '}'), nil
	}
	notObject := BadRequest("this credential goes into the JSON body's %q field, and the body is not one JSON object", field)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject
	}
	start, end, members := -1, -1, 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notObject
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, notObject
		}
		members++
		if key != field {
			continue
		}
		if start >= 0 {
			return nil, BadRequest("the JSON body names %q more than once: the credential goes into one", field)
		}
		end = int(dec.InputOffset())
		start = end - len(raw)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, notObject
	}
	closing := int(dec.InputOffset()) // just past the object's '}'
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, notObject
	}
	out := make([]byte, 0, len(body)+len(value)+len(field)+4)
	if start >= 0 {
		out = append(append(append(out, body[:start]...), value...), body[end:]...)
		return out, nil
	}
	name, _ := jsonStringOf([]byte(field))
	out = append(out, body[:closing-1]...)
	if members > 0 {
		out = append(out, ',')
	}
	out = append(append(append(append(out, name...), ':'), value...), body[closing-1:]...)
	return out, nil
}

func jsonStringOf(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(string(b)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// formWithField returns body, a form, with field's value replaced by
// secret, or the field added at the end; the other pairs stay as sent.
func formWithField(body []byte, field string, secret []byte) ([]byte, error) {
	pair := url.QueryEscape(field) + "=" + url.QueryEscape(string(secret))
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte(pair), nil
	}
	parts := strings.Split(string(body), "&")
	found := false
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, BadRequest("this credential goes into the form's %q field, and the form cannot be parsed", field)
		}
		if name != field {
			continue
		}
		if found {
			return nil, BadRequest("the form names %q more than once: the credential goes into one", field)
		}
		found = true
		parts[i] = pair
	}
	if !found {
		parts = append(parts, pair)
	}
	return []byte(strings.Join(parts, "&")), nil
}
