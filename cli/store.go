package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/postgres"
	"github.com/asyncfn/asyncfn/sqlite"
)

// storeHelp documents the --store values.
const storeHelp = "where batches are kept: PATH.db or sqlite:PATH (an embedded SQLite file, one process), postgres://USER:PASSWORD@HOST/DB?... (shared by many processes), dynamodb://TABLE?region=R&endpoint=URL, or memory (lost at exit)"

// storeForms lists the --store values, for errors.
const storeForms = "use memory, PATH.db (a SQLite file), sqlite:PATH, postgres://... or dynamodb://TABLE?region=REGION"

// scheme matches the "kind:" that starts a store URL or sqlite:PATH; one letter is a
// Windows drive.
var scheme = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]+):`)

// keywordDSN matches a PostgreSQL DSN in keyword=value form ("host=db password=...").
var keywordDSN = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)

// checkStore refuses a --store value that is surely a mistake rather than a SQLite file
// to create: an unknown kind of URL, a PostgreSQL DSN in keyword=value form, or a bare
// word ("memroy"), which has neither a directory nor an extension.
func checkStore(spec string) error {
	kind := ""
	if m := scheme.FindStringSubmatch(spec); m != nil {
		kind = strings.ToLower(m[1])
	}
	switch {
	case spec == "":
		return Usagef("--store is empty; %s", storeForms)
	case kind == "sqlite" || kind == "dynamodb" || isPostgres(spec):
		return nil
	case kind != "":
		return Usagef("--store %s: unknown kind of store %q; %s", redact(spec), kind, storeForms)
	case keywordDSN.MatchString(spec):
		return Usagef("--store is a DSN in keyword=value form; give PostgreSQL as a postgres:// URL")
	case spec != "memory" && !strings.ContainsAny(spec, `/\`) && filepath.Ext(spec) == "":
		hint := ""
		if near := nearest(spec, []string{"memory"}); near != "" {
			hint = " (did you mean memory?)"
		}
		return Usagef("--store %s is not a store%s: %s; a file without an extension is sqlite:%s", spec, hint, storeForms, spec)
	}
	return nil
}

// openStore opens the store a --store value names; errors name it.
func openStore(ctx context.Context, spec string, logger *slog.Logger) (asyncfn.Store, error) {
	if err := checkStore(spec); err != nil {
		return nil, err
	}
	store, err := openChecked(ctx, spec, logger)
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", redact(spec), err)
	}
	return store, nil
}

func openChecked(ctx context.Context, spec string, logger *slog.Logger) (asyncfn.Store, error) {
	switch {
	case isPostgres(spec):
		return postgres.Open(ctx, spec, postgres.Options{Logger: logger})
	case spec == "memory":
		return memory.New(), nil
	case strings.HasPrefix(spec, "sqlite:"):
		return sqlite.Open(ctx, strings.TrimPrefix(spec, "sqlite:"), sqlite.Options{Logger: logger})
	case strings.HasPrefix(spec, "dynamodb://"):
		return dynamodb.Open(ctx, spec, dynamodb.Options{Logger: logger})
	}
	return sqlite.Open(ctx, spec, sqlite.Options{Logger: logger})
}

// exclusive reports whether the store a --store value names serves this process alone:
// a SQLite file, which the store locks, or memory.
func exclusive(spec string) bool {
	return !isPostgres(spec) && !strings.HasPrefix(spec, "dynamodb://")
}

func isPostgres(spec string) bool {
	return strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://")
}

// secretPatterns find the secrets a store URL or DSN may carry, wherever it is quoted: the
// password of a URL's user information, and parameters such as password=,
// sslpassword= or aws_secret_access_key=. The secret is what lies between groups 1 and 2.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:)[^@/?#\s]*(@)`),
	regexp.MustCompile(`(?i)(\b[a-z_]*(?:password|passwd|secret[a-z_]*|token)=)(?:'[^']*'|[^&\s'"]*)()`),
}

// redact hides the secrets in s: a DSN or a message or log line that quotes one.
func redact(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, "${1}xxxxx${2}")
	}
	return s
}

// redactingWriter redacts what is written to it, a log record at a time (slog's handlers
// write each record whole).
type redactingWriter struct{ w io.Writer }

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// redactedError is an error whose message is redacted; errors.Is and As see the original.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError returns err with its message redacted.
func redactError(err error) error {
	if err == nil {
		return nil
	}
	if msg := redact(err.Error()); msg != err.Error() {
		return &redactedError{err, msg}
	}
	return err
}
