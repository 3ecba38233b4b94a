package artifacts

import (
	"encoding/base64"
	"mime"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// TypeOf is the artifact type of a file the agent left, by its name: plan.md
// is the run's plan, context.md its context, anything else generic.
func TypeOf(name string) string {
	switch strings.ToLower(name) {
	case "plan.md":
		return tasksapi.ArtifactPlan
	case "context.md":
		return tasksapi.ArtifactContext
	}
	return tasksapi.ArtifactGeneric
}

// Encode makes data an artifact: UTF-8 text as it is, anything else as
// base64. contentType "" is guessed from the name's extension.
func Encode(name, typ, contentType string, data []byte) tasksapi.Artifact {
	if contentType == "" {
		contentType = mime.TypeByExtension(filepath.Ext(name))
	}
	if utf8.Valid(data) {
		if contentType == "" {
			contentType = "text/plain"
		}
		return tasksapi.Artifact{Name: name, Type: typ, Content: string(data), ContentType: contentType, ContentEncoding: tasksapi.EncodingUTF8}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return tasksapi.Artifact{Name: name, Type: typ, Content: base64.StdEncoding.EncodeToString(data), ContentType: contentType, ContentEncoding: tasksapi.EncodingBase64}
}
