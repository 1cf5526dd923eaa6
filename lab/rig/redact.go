package rig

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// redacted replaces a secret's value in copies mforch writes.
const redacted = "REDACTED"

// secretSetting matches service setting names whose values are
// credentials (password, secret_key, access_key, token, ...).
var secretSetting = regexp.MustCompile(`(?i)pass|secret|token|key|credential`)

// dsnPassword matches a libpq key=value password.
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactCluster returns the cluster file b with its secrets replaced by
// REDACTED: the inline secret:, and every service credential (settings
// named like password, secret_key, access_key, token; a DSN's password).
// secret_file stays: it names a file, not the secret. A header comment
// says the copy was redacted and where the original is.
func redactCluster(b []byte, original string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("cluster file %s: %w", original, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("cluster file %s: not a mapping", original)
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "secret":
			setRedacted(v)
		case "services":
			if v.Kind != yaml.MappingNode {
				continue
			}
			for j := 1; j < len(v.Content); j += 2 {
				redactSettings(v.Content[j])
			}
		}
	}
	doc.HeadComment = strings.TrimSpace("mforch experiment's copy of " + original +
		": the cluster secret and service credentials are redacted (" + redacted + ").\n" + doc.HeadComment)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	enc.Close()
	return out.Bytes(), nil
}

func redactSettings(m *yaml.Node) {
	if m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		switch {
		case strings.EqualFold(k.Value, "dsn") || strings.EqualFold(k.Value, "url"):
			v.Value = redactDSN(v.Value)
		case secretSetting.MatchString(k.Value):
			setRedacted(v)
		}
	}
}

func setRedacted(v *yaml.Node) {
	v.Kind, v.Tag, v.Value, v.Style, v.Content = yaml.ScalarNode, "!!str", redacted, 0, nil
}

// redactDSN hides the password of a URL (scheme://user:password@host) or
// of a libpq key=value string.
func redactDSN(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
			return u.String()
		}
		return s
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
}

// writeRedactedCluster copies the cluster file src to dst with its
// secrets redacted: a run folder is meant to be shared.
func writeRedactedCluster(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	out, err := redactCluster(b, src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}
