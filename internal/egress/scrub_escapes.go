package egress

// The escapes a secret may come back in, decoded one character at a time
// as the scrubber matches: JSON and URL escapes, HTML entities, and each
// of them nested in another.

import "bytes"

// decodeNested decodes one ASCII character escaped twice at the start of
// p: an escape whose own characters are escaped, as a JSON string holding
// JSON writes `\\/` for '/' and `\\u0041` for 'A', or a query string holding
// JSON writes `%5C%2F`. It reads at most maxEscapeLen characters of the
// outer layer, each escaped or not, and decodes the inner escape from them.
func decodeNested(p []byte, eof bool) (byte, int, matchState) {
	var inner [maxEscapeLen]byte
	var ends [maxEscapeLen]int
	k, j, short := 0, 0, false
	for k < maxEscapeLen && j < len(p) {
		c, n := p[j], 1
		if c == '\\' || c == '%' || c == '&' {
			ch, m, st := decodeEscape(p[j:], eof)
			if st == needMore {
				short = true
				break
			}
			if st == matched {
				c, n = ch, m
			}
		}
		inner[k] = c
		j += n
		ends[k] = j
		k++
	}
	if k == 0 {
		return 0, 0, noMatch
	}
	// The inner escape is decided by what was read unless p ended (or an
	// outer escape was cut) before maxEscapeLen characters.
	done := k == maxEscapeLen || (eof && !short)
	ch, n, st := decodeEscape(inner[:k], done)
	if st != matched {
		return 0, 0, st
	}
	return ch, ends[n-1], matched
}

// decodeEscape decodes one escaped ASCII character at the start of p.
func decodeEscape(p []byte, eof bool) (byte, int, matchState) {
	more := func() (byte, int, matchState) {
		if eof {
			return 0, 0, noMatch
		}
		return 0, 0, needMore
	}
	switch p[0] {
	case '\\':
		if len(p) < 2 {
			return more()
		}
		switch p[1] {
		case '/', '"', '\\', '\'':
			return p[1], 2, matched
		case 'n':
			return '\n', 2, matched
		case 't':
			return '\t', 2, matched
		case 'r':
			return '\r', 2, matched
		case 'b':
			return '\b', 2, matched
		case 'f':
			return '\f', 2, matched
		case 'u', 'x':
			width := 4
			if p[1] == 'x' {
				width = 2
			}
			v, n, st := hexDigits(p[2:], width, width, eof)
			if st != matched || v >= 0x80 {
				return 0, 0, st
			}
			return byte(v), 2 + n, matched
		}
		return 0, 0, noMatch
	case '%':
		v, n, st := hexDigits(p[1:], 2, 2, eof)
		if st != matched {
			return 0, 0, st
		}
		return byte(v), 1 + n, matched
	case '&':
		return decodeEntity(p, eof)
	}
	return 0, 0, noMatch
}

// hexDigits reads between minN and maxN hex digits.
func hexDigits(p []byte, minN, maxN int, eof bool) (int, int, matchState) {
	v, n := 0, 0
	for n < maxN {
		if n >= len(p) {
			if eof || n >= minN && n == maxN {
				break
			}
			return 0, 0, needMore
		}
		d, ok := hexVal(p[n])
		if !ok {
			break
		}
		v = v*16 + d
		n++
	}
	if n < minN {
		return 0, 0, noMatch
	}
	return v, n, matched
}

var namedEntities = map[string]byte{"amp": '&', "lt": '<', "gt": '>', "quot": '"', "apos": '\'', "sol": '/', "colon": ':', "equals": '=', "plus": '+', "lowbar": '_', "period": '.', "hyphen": '-', "dash": '-'}

// decodeEntity decodes an HTML character reference: &#65; &#x41; &amp;.
func decodeEntity(p []byte, eof bool) (byte, int, matchState) {
	end := bytes.IndexByte(p[:min(len(p), maxEscapeLen)], ';')
	if end < 0 {
		if len(p) < maxEscapeLen && !eof {
			// Only a prefix that could still become a reference waits.
			if entityPrefix(p[1:]) {
				return 0, 0, needMore
			}
		}
		return 0, 0, noMatch
	}
	body := p[1:end]
	if len(body) >= 2 && body[0] == '#' {
		v, ok := 0, true
		if body[1] == 'x' || body[1] == 'X' {
			if len(body) < 3 {
				return 0, 0, noMatch
			}
			for _, c := range body[2:] {
				d, isHex := hexVal(c)
				ok = ok && isHex
				v = v*16 + d
			}
		} else {
			for _, c := range body[1:] {
				ok = ok && c >= '0' && c <= '9'
				v = v*10 + int(c-'0')
			}
		}
		if !ok || v >= 0x80 {
			return 0, 0, noMatch
		}
		return byte(v), end + 1, matched
	}
	if ch, ok := namedEntities[string(body)]; ok {
		return ch, end + 1, matched
	}
	return 0, 0, noMatch
}

func entityPrefix(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if p[0] == '#' {
		for i, c := range p[1:] {
			if _, ok := hexVal(c); !ok && !(i == 0 && (c == 'x' || c == 'X')) {
				return false
			}
		}
		return true
	}
	for _, c := range p {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func hexVal(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upperASCII(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}
