package localapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

var originProducts = map[string]bool{
	"error_tracking": true, "eval_clusters": true, "user_created": true, "support_queue": true, "session_summaries": true,
}

var artifactTypes = map[string]bool{
	tasksapi.ArtifactPlan: true, tasksapi.ArtifactContext: true, tasksapi.ArtifactReference: true,
	tasksapi.ArtifactOutput: true, tasksapi.ArtifactGeneric: true,
}

// readObject reads a JSON object body: the right content type, valid JSON, an object.
func readObject(r *http.Request) (map[string]json.RawMessage, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			detail: fmt.Sprintf("Unsupported media type %q in request.", r.Header.Get("Content-Type"))}
	}
	var body map[string]json.RawMessage
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&body); err != nil || body == nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", detail: "Request body too large."}
		}
		return nil, invalid("", "parse_error", "JSON parse error: the body must be a JSON object.")
	}
	return body, nil
}

// field kinds of a JSON value
func kind(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	switch {
	case t == "null":
		return "null"
	case strings.HasPrefix(t, "{"):
		return "object"
	case strings.HasPrefix(t, "["):
		return "list"
	case strings.HasPrefix(t, `"`):
		return "string"
	case t == "true" || t == "false":
		return "bool"
	default:
		return "number"
	}
}

// stringField reads a CharField: strings and numbers are accepted (as DRF
// does), objects, lists and booleans are not; null only when nullable.
func stringField(body map[string]json.RawMessage, name string, nullable bool) (*string, bool, error) {
	raw, ok := body[name]
	if !ok {
		return nil, false, nil
	}
	switch kind(raw) {
	case "null":
		if !nullable {
			return nil, true, invalid(name, "null", "This field may not be null.")
		}
		return nil, true, nil
	case "string":
		var s string
		_ = json.Unmarshal(raw, &s)
		return &s, true, nil
	case "number":
		s := strings.TrimSpace(string(raw))
		return &s, true, nil
	}
	return nil, true, invalid(name, "invalid", "Not a valid string.")
}

var repositoryRe = regexp.MustCompile(`^[^/\s]+/[^/\s]+$`)

func (s *Server) taskFields(body map[string]json.RawMessage, creating bool) (taskFields, error) {
	var f taskFields
	title, has, err := stringField(body, "title", false)
	if err != nil {
		return f, err
	}
	if creating && !has {
		return f, invalid("title", "required", "This field is required.")
	}
	if has {
		if strings.TrimSpace(*title) == "" {
			return f, invalid("title", "blank", "This field may not be blank.")
		}
		f.Title = title
	}
	if f.Description, _, err = stringField(body, "description", false); err != nil {
		return f, err
	}
	if origin, has, err := stringField(body, "origin_product", false); err != nil {
		return f, err
	} else if has {
		if !originProducts[*origin] {
			return f, invalid("origin_product", "invalid_choice", fmt.Sprintf("%q is not a valid choice.", *origin))
		}
		f.OriginProduct = origin
	}
	if repo, has, err := stringField(body, "repository", true); err != nil {
		return f, err
	} else if has {
		if repo != nil {
			if *repo == "" {
				repo = nil
			} else if !repositoryRe.MatchString(*repo) {
				return f, invalid("repository", "invalid", "Repository must be in the format organization/repository.")
			} else {
				lower := strings.ToLower(*repo)
				repo = &lower
			}
		}
		f.Repository = &repo
	}
	if assignee, has, err := stringField(body, "assignee", true); err != nil {
		return f, err
	} else if has && creating {
		f.Assignee = &assignee
	}
	if raw, ok := body["github_integration"]; ok {
		var n *int
		switch kind(raw) {
		case "null":
		case "number":
			v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
			if err != nil {
				return f, invalid("github_integration", "invalid", "A valid integer is required.")
			}
			n = &v
		default:
			return f, invalid("github_integration", "invalid", "A valid integer is required.")
		}
		f.GithubIntegration = &n
	}
	if raw, ok := body["json_schema"]; ok {
		if k := kind(raw); k != "null" && k != "object" {
			return f, invalid("json_schema", "invalid", "json_schema must be a JSON object or null.")
		}
		f.JSONSchema = &raw
	}
	return f, nil
}

func parseRunPatch(body map[string]json.RawMessage) (runPatch, error) {
	var p runPatch
	if raw, ok := body["status"]; ok {
		var st string
		if kind(raw) != "string" || json.Unmarshal(raw, &st) != nil || !tasksapi.Status(st).Valid() {
			return p, invalid("status", "invalid_choice", fmt.Sprintf("%s is not a valid choice.", strings.TrimSpace(string(raw))))
		}
		status := tasksapi.Status(st)
		p.Status = &status
	}
	for name, dst := range map[string]***string{"branch": &p.Branch, "stage": &p.Stage, "error_message": &p.ErrorMessage} {
		v, has, err := stringField(body, name, true)
		if err != nil {
			return p, err
		}
		if has {
			*dst = &v
		}
	}
	if raw, ok := body["state"]; ok {
		switch kind(raw) {
		case "null":
			return p, invalid("state", "null", "This field may not be null.")
		case "object":
			_ = json.Unmarshal(raw, &p.State)
		default:
			return p, invalid("state", "invalid", "state must be a JSON object.")
		}
	}
	if raw, ok := body["output"]; ok {
		switch kind(raw) {
		case "null":
			var none map[string]any
			p.Output = &none
		case "object":
			out := map[string]any{}
			_ = json.Unmarshal(raw, &out)
			p.Output = &out
		default:
			return p, invalid("output", "invalid", "output must be a JSON object or null.")
		}
	}
	return p, nil
}

func parseArtifact(item map[string]json.RawMessage, i int) (tasksapi.ArtifactRecord, []byte, error) {
	attr := func(f string) string { return fmt.Sprintf("artifacts__%d__%s", i, f) }
	str := func(f string, required bool) (string, error) {
		v, has, err := stringField(item, f, !required)
		if err != nil {
			return "", invalid(attr(f), "invalid", "Not a valid string.")
		}
		if !has || v == nil {
			if required {
				return "", invalid(attr(f), "required", "This field is required.")
			}
			return "", nil
		}
		return *v, nil
	}
	name, err := str("name", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	base := filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "" || len(name) > 255 || base == "." || base == ".." || base == "/" {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("name"), "invalid", "name must be 1 to 255 characters and name a file.")
	}
	typ, err := str("type", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	if !artifactTypes[typ] {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("type"), "invalid_choice", fmt.Sprintf("%q is not a valid choice.", typ))
	}
	content, err := str("content", true)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	encoding, err := str("content_encoding", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	var data []byte
	switch encoding {
	case "", tasksapi.EncodingUTF8:
		data = []byte(content)
	case tasksapi.EncodingBase64:
		if data, err = base64.StdEncoding.DecodeString(content); err != nil {
			return tasksapi.ArtifactRecord{}, nil, invalid(attr("content"), "invalid", "content is not valid base64.")
		}
	default:
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("content_encoding"), "invalid_choice", fmt.Sprintf("%q is not a valid choice.", encoding))
	}
	if len(data) > tasksapi.MaxArtifactBytes {
		return tasksapi.ArtifactRecord{}, nil, invalid(attr("content"), "too_large", fmt.Sprintf("artifact %s is over the 30 MiB limit.", base))
	}
	contentType, err := str("content_type", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	source, err := str("source", false)
	if err != nil {
		return tasksapi.ArtifactRecord{}, nil, err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return tasksapi.ArtifactRecord{
		ID: uuid.NewString(), Name: base, Type: typ, Source: source,
		Size: int64(len(data)), ContentType: contentType,
	}, data, nil
}
