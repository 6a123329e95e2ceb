package credentials

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
)

// documentFields completes each request field's description with what the
// schema already knows and `vault path-help` does not print: the default,
// the allowed values and whether it is required. Writing them once here
// keeps the help and the schema from disagreeing.
func documentFields(paths []*framework.Path) {
	for _, p := range paths {
		for _, f := range p.Fields {
			f.Description = strings.TrimSpace(f.Description)
			if f.Required && !strings.Contains(f.Description, "Required") {
				f.Description = "Required. " + f.Description
			}
			if len(f.AllowedValues) > 0 && !listsAll(f.Description, f.AllowedValues) {
				vals := make([]string, len(f.AllowedValues))
				for i, v := range f.AllowedValues {
					vals[i] = fmt.Sprint(v)
				}
				f.Description += " One of: " + strings.Join(vals, ", ") + "."
			}
			if f.Default != nil && !strings.Contains(f.Description, "Default") && !strings.Contains(f.Description, "default") {
				f.Description += " Default: " + describeDefault(f) + "."
			}
		}
	}
}

func listsAll(desc string, vals []interface{}) bool {
	for _, v := range vals {
		if !strings.Contains(desc, fmt.Sprint(v)) {
			return false
		}
	}
	return true
}

// describeDefault writes a default as a person would type it: durations
// as 10m, not 600.
func describeDefault(f *framework.FieldSchema) string {
	if f.Type == framework.TypeDurationSecond {
		if secs, ok := f.Default.(int); ok {
			return shortDuration(time.Duration(secs) * time.Second)
		}
	}
	return fmt.Sprint(f.Default)
}

// shortDuration drops the zero units time.Duration.String keeps (10m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
