package egress

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
)

// MinScrubLen is the shortest form scrubbed: shorter ones would match
// ordinary text and mangle answers.
const MinScrubLen = 6

// Scrubber removes a secret from what a service sends back, in every form
// an echo would take: as sent, in base64 (standard and URL alphabets, at
// every alignment inside a larger encoded text) and in hex (either case);
// and each of those with any of its characters escaped the ways text
// formats escape them: JSON (\/, \uXXXX in either case, \" \\ \n ...),
// percent-encoding in either case (and '+' for a space), and HTML entities
// (&#65; &#x41; &amp; ...), once or twice over (a JSON string holding JSON
// writes '/' as \\/ or \\\/, a query string holding JSON as %5C%2F).
// Escaped and plain characters may be mixed freely. Each occurrence is replaced by a mark that cannot combine with
// the text around it into a new occurrence.
//
// A Scrubber is safe for concurrent use; each stream gets its own Writer.
type Scrubber struct {
	forms [][]byte
	// fold marks forms matched without regard to ASCII case (hex).
	fold []bool
	// start says which bytes can begin a match of any form, so that the
	// scan skips all others at the cost of one table look-up.
	start [256]bool
	// byFirst lists, per first character (unescaped), the forms that start
	// with it, so a position is tried only against forms it can begin.
	byFirst [256][]int
	mark    []byte
	// maxSpan bounds how far one match can reach, escaped: the most a
	// stream ever holds back.
	maxSpan int
}

// NewScrubber scrubs the given plaintexts (see Plaintexts). It copies what
// it needs; Zero clears its copies.
func NewScrubber(plaintexts [][]byte) *Scrubber {
	s := &Scrubber{}
	seen := map[string]bool{}
	add := func(b []byte, fold bool) {
		if len(b) < MinScrubLen || seen[string(b)] {
			clear(b)
			return
		}
		seen[string(b)] = true
		s.forms = append(s.forms, b)
		s.fold = append(s.fold, fold)
	}
	for _, p := range plaintexts {
		add(append([]byte(nil), p...), false)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			for shift := 0; shift < 3; shift++ {
				add(base64Core(enc, p, shift), false)
			}
		}
		h := make([]byte, hex.EncodedLen(len(p)))
		hex.Encode(h, p)
		add(h, true)
	}
	for i, f := range s.forms {
		s.start[f[0]] = true
		s.byFirst[f[0]] = append(s.byFirst[f[0]], i)
		if s.fold[i] {
			for _, c := range []byte{lowerASCII(f[0]), upperASCII(f[0])} {
				s.start[c] = true
				if c != f[0] {
					s.byFirst[c] = append(s.byFirst[c], i)
				}
			}
		}
		if f[0] == ' ' {
			s.start['+'] = true
		}
		if f[0] < 0x80 {
			s.start['\\'], s.start['%'], s.start['&'] = true, true, true
		}
		if span := len(f) * maxEscapeLen * maxEscapeLen; span > s.maxSpan {
			s.maxSpan = span
		}
	}
	s.mark = markFor(plaintexts)
	return s
}

// ScrubberFor scrubs what m, injected as inj, could be echoed as. It
// zeroes the plaintexts it builds; Zero clears the scrubber's own copies.
func ScrubberFor(inj Injection, m Material) *Scrubber {
	plain := Plaintexts(inj, m)
	s := NewScrubber(plain)
	for _, p := range plain {
		clear(p)
	}
	return s
}

// Empty says whether there is nothing to scrub.
func (s *Scrubber) Empty() bool { return s == nil || len(s.forms) == 0 }

// Zero clears the scrubber's copies of the secret.
func (s *Scrubber) Zero() {
	if s == nil {
		return
	}
	for _, f := range s.forms {
		clear(f)
	}
}

// markFor picks a mark whose first and last bytes appear in no plaintext:
// then no occurrence can span a mark and the text beside it. The secret's
// base64 and hex forms never hold these bytes.
func markFor(plaintexts [][]byte) []byte {
	for _, m := range []string{"[REDACTED]", "***", "###", "~~~", "^^^", "|||"} {
		ok := true
		for _, p := range plaintexts {
			if bytes.IndexByte(p, m[0]) >= 0 || bytes.IndexByte(p, m[len(m)-1]) >= 0 {
				ok = false
				break
			}
		}
		if ok {
			return []byte(m)
		}
	}
	return []byte("[REDACTED]")
}

// Bytes returns b scrubbed, and whether anything was replaced.
func (s *Scrubber) Bytes(b []byte) ([]byte, bool) {
	if s.Empty() {
		return b, false
	}
	var out bytes.Buffer
	changed := false
	s.scan(b, true, func(p []byte, isMark bool) {
		changed = changed || isMark
		out.Write(p)
	})
	if !changed {
		return b, false
	}
	return out.Bytes(), true
}

// String returns v scrubbed.
func (s *Scrubber) String(v string) string {
	out, changed := s.Bytes([]byte(v))
	if !changed {
		return v
	}
	return string(out)
}

// scan emits buf with every match replaced by the mark and returns how
// much of buf it consumed. Unless eof, it stops at the first position
// where a match may begin but buf ends before it can be decided: that tail
// is all a stream holds back.
func (s *Scrubber) scan(buf []byte, eof bool, emit func(p []byte, isMark bool)) int {
	flushed := 0
	start := &s.start
	for i := 0; i < len(buf); i++ {
		for i < len(buf) && !start[buf[i]] {
			i++
		}
		if i == len(buf) {
			break
		}
		b := buf[i]
		best, undecided := s.tryForms(buf[i:], b, eof)
		switch b {
		case '\\', '%', '&':
			ch, _, st := decodeEscape(buf[i:], eof)
			if st == needMore {
				undecided = true
			} else if st == matched && ch != b {
				n, u := s.tryForms(buf[i:], ch, eof)
				best, undecided = max(best, n), undecided || u
				if escapeStart[ch] && ch != '+' {
					switch ch2, _, st2 := decodeNested(buf[i:], eof); st2 {
					case needMore:
						undecided = true
					case matched:
						n, u := s.tryForms(buf[i:], ch2, eof)
						best, undecided = max(best, n), undecided || u
					}
				}
			}
		case '+':
			n, u := s.tryForms(buf[i:], ' ', eof)
			best, undecided = max(best, n), undecided || u
		}
		if undecided {
			if i > flushed {
				emit(buf[flushed:i], false)
			}
			return i
		}
		if best > 0 {
			if i > flushed {
				emit(buf[flushed:i], false)
			}
			emit(s.mark, true)
			flushed = i + best
			i = flushed - 1
		}
	}
	if len(buf) > flushed {
		emit(buf[flushed:], false)
	}
	return len(buf)
}

// tryForms matches the forms that start with first at the start of buf:
// the longest match, and whether one could not yet be decided.
func (s *Scrubber) tryForms(buf []byte, first byte, eof bool) (best int, undecided bool) {
	for _, k := range s.byFirst[first] {
		f := s.forms[k]
		// Most candidates fail on their second character; decide those
		// without a call. Only a plain first character is handled here.
		if len(buf) > 1 && buf[0] == first && !s.fold[k] {
			if c := buf[1]; c != f[1] && !escapeStart[c] {
				continue
			}
		}
		n, st := matchAt(buf, f, s.fold[k], eof)
		switch st {
		case matched:
			best = max(best, n)
		case needMore:
			undecided = true
		}
	}
	return best, undecided
}

// escapeStart are the bytes that may begin an escaped character.
var escapeStart = [256]bool{'\\': true, '%': true, '&': true, '+': true}

type matchState int

const (
	noMatch matchState = iota
	matched
	needMore
)

// maxEscapeLen is the longest escape of one character matched
// (&#x0000041; is allowed leading zeros up to this length).
const maxEscapeLen = 10

// matchAt matches form f at the start of buf, each character either as it
// is or escaped once or twice, and returns the bytes it spans.
func matchAt(buf, f []byte, fold, eof bool) (int, matchState) {
	var failed map[[2]int]bool
	return matchFrom(buf, f, 0, 0, fold, eof, &failed)
}

// matchFrom matches f[i:] at buf[j:]. A character of f that is '\\', '%'
// or '&' may read several ways (`\\\\` is '\\' escaped once, or two plain
// backslashes, or the start of '\\' escaped twice): each reading is tried
// for the rest of f, and the (i, j) that failed are remembered, so a secret
// full of backslashes costs len(f) times the span, not 3^len(f).
func matchFrom(buf, f []byte, i, j int, fold, eof bool, failed *map[[2]int]bool) (int, matchState) {
	same := func(ch, c byte) bool { return ch == c || (fold && lowerASCII(ch) == lowerASCII(c)) }
	for ; i < len(f); i++ {
		c := f[i]
		if j >= len(buf) {
			if eof {
				return 0, noMatch
			}
			return 0, needMore
		}
		b := buf[j]
		if c >= 0x80 || (b != '\\' && b != '%' && b != '&') {
			if same(b, c) || (c == ' ' && b == '+') {
				j++
				continue
			}
			return 0, noMatch
		}
		// b begins an escape: the character escaped once, twice, or b itself.
		var spans [3]int
		k := 0
		ch, n, st := decodeEscape(buf[j:], eof)
		if st == needMore {
			return 0, needMore
		}
		if st == matched {
			if same(ch, c) {
				spans[k], k = n, k+1
			}
			if escapeStart[ch] && ch != '+' {
				ch2, n2, st2 := decodeNested(buf[j:], eof)
				if st2 == needMore {
					return 0, needMore
				}
				if st2 == matched && same(ch2, c) {
					spans[k], k = n2, k+1
				}
			}
		}
		if same(b, c) {
			spans[k], k = 1, k+1
		}
		switch k {
		case 0:
			return 0, noMatch
		case 1:
			j += spans[0]
			continue
		}
		// In order, and undecided as soon as one reading is: a stream then
		// decides as the whole text would.
		if *failed == nil {
			*failed = map[[2]int]bool{}
		}
		for _, span := range spans[:k] {
			at := [2]int{i + 1, j + span}
			if (*failed)[at] {
				continue
			}
			m, st := matchFrom(buf, f, i+1, j+span, fold, eof, failed)
			if st != noMatch {
				return m, st
			}
			(*failed)[at] = true
		}
		return 0, noMatch
	}
	return j, matched
}

// base64Core returns the base64 characters determined by p alone when p
// starts shift bytes into a larger encoded stream; any base64 text that
// contains p at that alignment contains these characters.
func base64Core(enc *base64.Encoding, p []byte, shift int) []byte {
	buf := make([]byte, shift+len(p))
	copy(buf[shift:], p)
	full := make([]byte, enc.EncodedLen(len(buf)))
	enc.Encode(full, buf)
	clear(buf)
	// Character i covers bits [6i, 6i+6); p covers bits [8*shift, 8*(shift+n)).
	first := (8*shift + 5) / 6
	last := (8*(shift+len(p)))/6 - 1
	if last < first {
		clear(full)
		return nil
	}
	core := append([]byte(nil), full[first:last+1]...)
	clear(full)
	return core
}

// Writer scrubs a stream on its way to w. It holds back only a tail that
// may begin an occurrence (never more than one escaped form's length), so
// a stream's events pass as they come. Close writes the tail and zeroes
// what the writer held.
type Writer struct {
	s       *Scrubber
	w       io.Writer
	pending []byte
	err     error
}

// NewWriter scrubs what is written on its way to w.
func (s *Scrubber) NewWriter(w io.Writer) *Writer {
	return &Writer{s: s, w: w}
}

func (sw *Writer) emit(p []byte, _ bool) {
	if sw.err == nil {
		_, sw.err = sw.w.Write(p)
	}
}

// Write scrubs p and passes on all that is decided.
func (sw *Writer) Write(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if sw.s.Empty() {
		_, sw.err = sw.w.Write(p)
		return len(p), sw.err
	}
	buf := p
	if len(sw.pending) > 0 {
		sw.pending = append(sw.pending, p...)
		buf = sw.pending
	}
	n := sw.s.scan(buf, false, sw.emit)
	rest := buf[n:]
	if len(sw.pending) > 0 {
		m := copy(sw.pending, rest)
		clear(sw.pending[m:])
		sw.pending = sw.pending[:m]
	} else if len(rest) > 0 {
		sw.pending = append(sw.pending[:0], rest...)
	}
	return len(p), sw.err
}

// Close passes on the held tail, scrubbed, and zeroes it.
func (sw *Writer) Close() error {
	if len(sw.pending) > 0 {
		sw.s.scan(sw.pending, true, sw.emit)
		clear(sw.pending)
		sw.pending = sw.pending[:0]
	}
	return sw.err
}
