package tasksapi

import (
	"encoding/json"
	"time"
)

// Status of a task run.
type Status string

// The six run statuses of the contract.
const (
	StatusNotStarted Status = "not_started"
	StatusQueued     Status = "queued"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusCancelled  Status = "cancelled"
)

// Terminal reports whether a run in this status is finished.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is one of the six statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusNotStarted, StatusQueued, StatusInProgress, StatusCompleted, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// Environments of a run: who drives it.
const (
	// EnvironmentCloud runs are executed by PostHog's own cloud runner.
	EnvironmentCloud = "cloud"
	// EnvironmentLocal runs are driven by a client outside PostHog's cloud
	// (such as this worker's dispatcher), reporting through the API.
	EnvironmentLocal = "local"
)

// User is a task's creator.
type User struct {
	ID        int    `json:"id"`
	UUID      string `json:"uuid"`
	Email     string `json:"email"`
	FirstName string `json:"first_name"`
}

// Task is a unit of work for an agent.
type Task struct {
	ID                string          `json:"id"`
	TaskNumber        *int            `json:"task_number"`
	Slug              string          `json:"slug"`
	Title             string          `json:"title"`
	Description       string          `json:"description"`
	OriginProduct     string          `json:"origin_product"`
	Repository        *string         `json:"repository"`
	GithubIntegration *int            `json:"github_integration"`
	JSONSchema        json.RawMessage `json:"json_schema"`
	CreatedBy         *User           `json:"created_by"`
	Assignee          *string         `json:"assignee"`
	LatestRun         *TaskRun        `json:"latest_run"`
	CreatedAt         time.Time       `json:"created_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
}

// RepositoryName is the task's "org/repo", or "" when it has none.
func (t Task) RepositoryName() string {
	if t.Repository == nil {
		return ""
	}
	return *t.Repository
}

// TaskRun is one execution of a task.
type TaskRun struct {
	ID           string           `json:"id"`
	Task         string           `json:"task"`
	Stage        *string          `json:"stage"`
	Branch       *string          `json:"branch"`
	Status       Status           `json:"status"`
	Environment  string           `json:"environment"`
	LogURL       string           `json:"log_url"`
	ErrorMessage *string          `json:"error_message"`
	Output       map[string]any   `json:"output"`
	State        map[string]any   `json:"state"`
	Artifacts    []ArtifactRecord `json:"artifacts"`
	CreatedAt    time.Time        `json:"created_at"`
	UpdatedAt    time.Time        `json:"updated_at"`
	CompletedAt  *time.Time       `json:"completed_at"`
}

// RunUpdate is the body of PATCH .../runs/{id}/; nil fields are not sent.
// Output and State are merged into the stored objects by their top-level keys.
type RunUpdate struct {
	Status       Status         `json:"status,omitempty"`
	Branch       *string        `json:"branch,omitempty"`
	Stage        *string        `json:"stage,omitempty"`
	Output       map[string]any `json:"output,omitempty"`
	State        map[string]any `json:"state,omitempty"`
	ErrorMessage *string        `json:"error_message,omitempty"`
}

// Artifact types of the contract.
const (
	ArtifactPlan      = "plan"
	ArtifactContext   = "context"
	ArtifactReference = "reference"
	ArtifactOutput    = "output"
	ArtifactGeneric   = "artifact"
)

// Artifact content encodings.
const (
	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
)

// MaxArtifactBytes is the API's limit on one artifact's decoded size.
const MaxArtifactBytes = 30 << 20

// Artifact is one file uploaded to a run.
type Artifact struct {
	Name            string `json:"name"`
	Type            string `json:"type"`
	Content         string `json:"content"`
	ContentType     string `json:"content_type,omitempty"`
	ContentEncoding string `json:"content_encoding,omitempty"`
	Source          string `json:"source,omitempty"`
}

// ArtifactRecord is an entry of a run's artifact manifest.
type ArtifactRecord struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	Source      string    `json:"source"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	StoragePath string    `json:"storage_path"`
	UploadedAt  time.Time `json:"uploaded_at"`
}

// Page is one page of a list endpoint.
type Page[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}
