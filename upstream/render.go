package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"

	"github.com/asyncfn/asyncfn"
)

// argument is one of a row's arguments in a template: it prints as text (a string
// without its quotes, a number as Snowflake sent it, NULL as nothing, an object or array
// as JSON) and json writes it as the JSON Snowflake sent.
type argument struct{ raw json.RawMessage }

func (a argument) String() string {
	if len(a.raw) > 0 && a.raw[0] == '"' {
		var s string
		if json.Unmarshal(a.raw, &s) == nil {
			return s
		}
	}
	if string(a.raw) == "null" {
		return ""
	}
	return string(a.raw)
}

func (a argument) MarshalJSON() ([]byte, error) { return a.raw, nil }

// rowData is what the templates of one row see through their functions.
type rowData struct {
	ctx     context.Context
	args    []json.RawMessage
	secrets map[string]Secret
	used    []string // the secrets the templates put in the request
}

// problem is a template function's error, told to the SQL user as it is.
type problem struct{ msg string }

func (p *problem) Error() string { return p.msg }

// funcs returns the template functions, reading the row from d.
func funcs(d *rowData) template.FuncMap {
	return template.FuncMap{
		"arg": func(i int) (argument, error) {
			if i < 0 || i >= len(d.args) {
				return argument{}, &problem{fmt.Sprintf("arg %d asks for argument %d (counted from 0), but the row has %d", i, i, len(d.args))}
			}
			return argument{d.args[i]}, nil
		},
		"args": func() []argument {
			out := make([]argument, len(d.args))
			for i, a := range d.args {
				out[i] = argument{a}
			}
			return out
		},
		"json": func(v any) (string, error) {
			if a, ok := v.(argument); ok {
				return string(a.raw), nil // as encoding it would give, without the cost
			}
			var b strings.Builder
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false) // valid JSON either way; <, > and & as they are
			if err := enc.Encode(v); err != nil {
				return "", &problem{"json: " + err.Error()}
			}
			return strings.TrimSuffix(b.String(), "\n"), nil
		},
		"urlpath": func(v any) string { return url.PathEscape(fmt.Sprint(v)) },
		"header": func(name string) string {
			return asyncfn.RequestHeader(d.ctx, asyncfn.HeaderCustomPrefix+name)
		},
		"secret": func(name string) (string, error) {
			s, ok := d.secrets[name]
			if !ok { // Validate checks the names; this is for safety's sake
				return "", &problem{fmt.Sprintf("no secret is named %s", name)}
			}
			if !slices.Contains(d.used, name) {
				d.used = append(d.used, name)
			}
			return s.Value, nil
		},
	}
}

// templates are a function's request templates, parsed.
type templates struct {
	set      *template.Template // url, method, body and "header NAME"
	constant map[string]string  // the text of those without actions, not executed
	headers  []string           // the header names, sorted
	pool     sync.Pool          // of *renderer
	secrets  map[string]Secret
}

// renderer executes a clone of the templates whose functions read its data: a clone per
// use would cost more than the request's templating itself.
type renderer struct {
	set  *template.Template
	data rowData
	buf  bytes.Buffer
}

// compile checks c and parses its templates; errors name the field.
func (c RowConfig) compile() (*templates, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	t := &templates{set: template.New(""), constant: map[string]string{}, secrets: c.Secrets}
	t.set.Funcs(funcs(&rowData{})).Option("missingkey=error")
	parsed := map[string]*parse.Tree{}
	add := func(field, name, text string) error {
		tm, err := t.set.New(name).Parse(text)
		if err != nil {
			return asyncfn.BadField(field, "%s", strings.TrimPrefix(err.Error(), "template: "))
		}
		parsed[name] = tm.Tree
		if !strings.Contains(text, "{{") {
			t.constant[name] = text
		}
		for _, tm := range t.set.Templates() {
			if parsed[tm.Name()] != tm.Tree { // another field's replaced, or a new one
				return asyncfn.BadField(field, "{{define}} and {{block}} are not supported")
			}
		}
		return checkSecrets(field, tm.Tree.Root, c.Secrets)
	}
	switch {
	case c.URL == "":
		return nil, asyncfn.BadField("url", "must be set")
	case c.Method == "":
		return nil, asyncfn.BadField("method", "must be set")
	}
	for _, f := range []struct{ field, text string }{{"url", c.URL}, {"method", c.Method}, {"body", c.Body}} {
		if err := add(f.field, f.field, f.text); err != nil {
			return nil, err
		}
	}
	for name, value := range c.Headers {
		if name == "" || strings.IndexFunc(name, notTokenChar) >= 0 {
			return nil, asyncfn.BadField("headers", "%q: not a header name", name)
		}
		if strings.EqualFold(name, "Host") {
			return nil, asyncfn.BadField("headers", "Host: the URL sets the host")
		}
		if err := add("headers", "header "+http.CanonicalHeaderKey(name), value); err != nil {
			return nil, err
		}
		t.headers = append(t.headers, http.CanonicalHeaderKey(name))
	}
	slices.Sort(t.headers)
	t.pool.New = func() any {
		r := &renderer{set: template.Must(t.set.Clone())}
		r.set.Funcs(funcs(&r.data))
		return r
	}
	return t, nil
}

// checkSecrets returns an error naming field if a template under n uses a secret not in
// secrets, or one not named by a quoted name: which secrets a request may carry is then
// known from the configuration, and cannot come from the rows.
func checkSecrets(field string, n parse.Node, secrets map[string]Secret) error {
	var err error
	var walk func(parse.Node)
	walk = func(n parse.Node) {
		if n == nil || err != nil {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, c := range n.Nodes {
					walk(c)
				}
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n != nil {
				for _, c := range n.Cmds {
					walk(c)
				}
			}
		case *parse.CommandNode:
			for i, a := range n.Args {
				if id, ok := a.(*parse.IdentifierNode); ok && id.Ident == "secret" {
					var name *parse.StringNode
					if i == 0 && len(n.Args) == 2 {
						name, _ = n.Args[1].(*parse.StringNode)
					}
					if name == nil {
						err = asyncfn.BadField(field, "%s: write a secret as {{secret \"NAME\"}}, its name quoted", n)
					} else if _, ok := secrets[name.Text]; !ok {
						err = asyncfn.BadField(field, "%s: no secret is named %s", n, name.Text)
					}
					return
				}
				walk(a)
			}
		case *parse.IfNode:
			walk(&n.BranchNode)
		case *parse.RangeNode:
			walk(&n.BranchNode)
		case *parse.WithNode:
			walk(&n.BranchNode)
		case *parse.BranchNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	walk(n)
	return err
}

// request is a row's request as its templates give it.
type request struct {
	method, url string
	u           *url.URL // url parsed, by RowFunction.request
	header      http.Header
	body        []byte
	secrets     []string // the names of the secrets in it
}

// render executes the templates for a row; an error is the row's, naming the field.
func (t *templates) render(ctx context.Context, args []json.RawMessage) (*request, error) {
	r := t.pool.Get().(*renderer)
	defer t.pool.Put(r)
	r.data = rowData{ctx: ctx, args: args, secrets: t.secrets, used: r.data.used[:0]}
	exec := func(field, name string) (string, error) {
		if text, ok := t.constant[name]; ok {
			return text, nil
		}
		r.buf.Reset()
		if err := r.set.ExecuteTemplate(&r.buf, name, nil); err != nil {
			var p *problem
			if errors.As(err, &p) {
				return "", fmt.Errorf("%s: %s", field, p.msg)
			}
			return "", errors.New(strings.TrimPrefix(err.Error(), "template: ")) // it names the field
		}
		return r.buf.String(), nil
	}
	req := &request{header: make(http.Header, len(t.headers)+1)}
	var err error
	if req.url, err = exec("url", "url"); err != nil {
		return nil, err
	}
	if req.method, err = exec("method", "method"); err != nil {
		return nil, err
	}
	body, err := exec("body", "body")
	if err != nil {
		return nil, err
	}
	req.body = []byte(body)
	for _, name := range t.headers {
		v, err := exec("headers", "header "+name)
		if err != nil {
			return nil, err
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("headers: %s: the value has a line break or NUL", name)
		}
		req.header[name] = []string{v}
	}
	req.secrets = slices.Clone(r.data.used)
	return req, nil
}
