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

// secret returns the value of the secret name (checked by Validate), noting that the
// request uses it.
func (d *rowData) secret(name string) string {
	if !slices.Contains(d.used, name) {
		d.used = append(d.used, name)
	}
	return d.secrets[name].Value
}

func argProblem(i, args int) string {
	return fmt.Sprintf("arg %d asks for argument %d (counted from 0), but the row has %d", i, i, args)
}

// problem is a template function's error, told to the SQL user as it is.
type problem struct{ msg string }

func (p *problem) Error() string { return p.msg }

// funcs returns the template functions, reading the row from d.
func funcs(d *rowData) template.FuncMap {
	return template.FuncMap{
		"arg": func(i int) (argument, error) {
			if i < 0 || i >= len(d.args) {
				return argument{}, &problem{argProblem(i, len(d.args))}
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
		"secret": d.secret,
	}
}

// templates are a function's request templates, parsed.
type templates struct {
	set      *template.Template  // url, method, body and "header NAME"
	constant map[string]string   // the text of those without actions, not executed
	fast     map[string]segments // those of the common actions only, evaluated without text/template
	headers  []string            // the header names, sorted
	pool     sync.Pool           // of *renderer
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
	t := &templates{set: template.New(""), constant: map[string]string{}, fast: map[string]segments{}, secrets: c.Secrets}
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
		} else if segs, ok := simple(tm.Tree.Root); ok {
			t.fast[name] = segs
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

// segments are a template of text and the common actions only ({{arg N}}, {{json (arg
// N)}}, {{urlpath (arg N)}}, {{urlquery (arg N)}}, {{header "NAME"}}, {{secret "NAME"}}),
// which write what text/template would write for them, without its reflection: templating
// would otherwise cost a third of a request's CPU. FuzzRowTemplates checks that both agree.
type segments []segment

type segment struct {
	text string // written as it is, when op is empty
	op   string // the function: arg, json, urlpath, urlquery, header or secret
	n    int    // the argument's index
	name string // the header's or secret's name
}

// simple returns the segments of a template made of text and the common actions only.
func simple(root *parse.ListNode) (segments, bool) {
	var segs segments
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			segs = append(segs, segment{text: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 {
				return nil, false
			}
			seg, ok := simpleCommand(n.Pipe.Cmds[0])
			if !ok {
				return nil, false
			}
			segs = append(segs, seg)
		default:
			return nil, false
		}
	}
	return segs, true
}

// simpleCommand returns the segment of one of the common actions.
func simpleCommand(c *parse.CommandNode) (segment, bool) {
	if len(c.Args) != 2 {
		return segment{}, false
	}
	fn, ok := c.Args[0].(*parse.IdentifierNode)
	if !ok {
		return segment{}, false
	}
	switch fn.Ident {
	case "arg":
		n, ok := argIndex(c.Args[1])
		return segment{op: "arg", n: n}, ok
	case "json", "urlpath", "urlquery":
		p, ok := c.Args[1].(*parse.PipeNode)
		if !ok || len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 2 {
			return segment{}, false
		}
		if inner, ok := p.Cmds[0].Args[0].(*parse.IdentifierNode); !ok || inner.Ident != "arg" {
			return segment{}, false
		}
		n, ok := argIndex(p.Cmds[0].Args[1])
		return segment{op: fn.Ident, n: n}, ok
	case "header", "secret":
		name, ok := c.Args[1].(*parse.StringNode)
		if !ok {
			return segment{}, false
		}
		return segment{op: fn.Ident, name: name.Text}, true
	}
	return segment{}, false
}

func argIndex(n parse.Node) (int, bool) {
	num, ok := n.(*parse.NumberNode)
	if !ok || !num.IsInt || num.Int64 != int64(int(num.Int64)) {
		return 0, false
	}
	return int(num.Int64), true
}

// write writes the segments for the row of d to buf; or returns the row's problem.
func (segs segments) write(buf *bytes.Buffer, d *rowData) string {
	for _, s := range segs {
		var a argument
		if s.op == "arg" || s.op == "json" || s.op == "urlpath" || s.op == "urlquery" {
			if s.n < 0 || s.n >= len(d.args) {
				return argProblem(s.n, len(d.args))
			}
			a = argument{d.args[s.n]}
		}
		switch s.op {
		case "":
			buf.WriteString(s.text)
		case "arg":
			buf.WriteString(a.String())
		case "json":
			buf.Write(a.raw)
		case "urlpath":
			buf.WriteString(url.PathEscape(a.String()))
		case "urlquery":
			buf.WriteString(url.QueryEscape(a.String()))
		case "header":
			buf.WriteString(asyncfn.RequestHeader(d.ctx, asyncfn.HeaderCustomPrefix+s.name))
		case "secret":
			buf.WriteString(d.secret(s.name))
		}
	}
	return ""
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
		if segs, ok := t.fast[name]; ok {
			if msg := segs.write(&r.buf, &r.data); msg != "" {
				return "", fmt.Errorf("%s: %s", field, msg)
			}
			return r.buf.String(), nil
		}
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
