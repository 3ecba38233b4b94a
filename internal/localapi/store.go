package localapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, no cgo

	"github.com/taskworker/taskworker/internal/tasksapi"
)

const schema = `
CREATE TABLE IF NOT EXISTS tasks (
	id TEXT PRIMARY KEY,
	task_number INTEGER NOT NULL,
	title TEXT NOT NULL,
	description TEXT NOT NULL,
	origin_product TEXT NOT NULL,
	repository TEXT,
	github_integration INTEGER,
	json_schema TEXT,
	assignee TEXT,
	deleted INTEGER NOT NULL DEFAULT 0,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
	id TEXT PRIMARY KEY,
	task_id TEXT NOT NULL REFERENCES tasks(id),
	stage TEXT,
	branch TEXT,
	status TEXT NOT NULL,
	environment TEXT NOT NULL,
	error_message TEXT,
	output TEXT,
	state TEXT NOT NULL,
	artifacts TEXT NOT NULL,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL,
	completed_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_task ON runs(task_id, created_at);
CREATE TABLE IF NOT EXISTS log_entries (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	run_id TEXT NOT NULL,
	entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_run ON log_entries(run_id, seq);
CREATE TABLE IF NOT EXISTS status_history (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	run_id TEXT NOT NULL,
	status TEXT NOT NULL,
	at TEXT NOT NULL
);
`

// store keeps tasks, runs, logs and status history in SQLite.
type store struct {
	db  *sql.DB
	now func() time.Time
}

var errNotFound = errors.New("not found")

func openStore(path string) (*store, error) {
	// WAL with synchronous=NORMAL: no fsync per commit (each cost tens of
	// milliseconds on a busy disk, on every PATCH and append), and still no
	// corruption on a crash; a dev stack may lose its last writes on power loss.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)"
	if path == "" {
		dsn = "file:" + uuid.NewString() + "?mode=memory&cache=shared"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps every
	// request's read-modify-write atomic without retry loops.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	return &store{db: db, now: func() time.Time { return time.Now().UTC() }}, nil
}

func (s *store) close() error { return s.db.Close() }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

type taskFields struct {
	Title             *string
	Description       *string
	OriginProduct     *string
	Repository        **string
	GithubIntegration **int
	JSONSchema        *json.RawMessage
	Assignee          **string
}

func (s *store) createTask(ctx context.Context, f taskFields) (tasksapi.Task, error) {
	now := s.now()
	id := uuid.NewString()
	origin := "user_created"
	if f.OriginProduct != nil {
		origin = *f.OriginProduct
	}
	desc := ""
	if f.Description != nil {
		desc = *f.Description
	}
	// The number is taken in the same statement that inserts, so concurrent
	// creates never share one (they did when it was read first).
	_, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, task_number, title, description, origin_product, repository,
		github_integration, json_schema, assignee, created_at, updated_at)
		SELECT ?, COALESCE(MAX(task_number), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM tasks`,
		id, *f.Title, desc, origin, derefOrNil(f.Repository), derefIntOrNil(f.GithubIntegration),
		rawOrNil(f.JSONSchema), derefOrNil(f.Assignee), ts(now), ts(now))
	if err != nil {
		return tasksapi.Task{}, err
	}
	return s.getTask(ctx, id)
}

func derefOrNil(p **string) any {
	if p == nil || *p == nil {
		return nil
	}
	return **p
}

func derefIntOrNil(p **int) any {
	if p == nil || *p == nil {
		return nil
	}
	return **p
}

func rawOrNil(p *json.RawMessage) any {
	if p == nil || len(*p) == 0 || string(*p) == "null" {
		return nil
	}
	return string(*p)
}

func (s *store) updateTask(ctx context.Context, id string, f taskFields) (tasksapi.Task, error) {
	if _, err := s.getTask(ctx, id); err != nil {
		return tasksapi.Task{}, err
	}
	sets, args := []string{}, []any{}
	add := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
	if f.Title != nil {
		add("title", *f.Title)
	}
	if f.Description != nil {
		add("description", *f.Description)
	}
	if f.OriginProduct != nil {
		add("origin_product", *f.OriginProduct)
	}
	if f.Repository != nil {
		add("repository", derefOrNil(f.Repository))
	}
	if f.GithubIntegration != nil {
		add("github_integration", derefIntOrNil(f.GithubIntegration))
	}
	if f.JSONSchema != nil {
		add("json_schema", rawOrNil(f.JSONSchema))
	}
	add("updated_at", ts(s.now()))
	args = append(args, id)
	if _, err := s.db.ExecContext(ctx, `UPDATE tasks SET `+strings.Join(sets, ", ")+` WHERE id = ?`, args...); err != nil {
		return tasksapi.Task{}, err
	}
	return s.getTask(ctx, id)
}

func (s *store) deleteTask(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tasks SET deleted = 1, updated_at = ? WHERE id = ? AND deleted = 0`, ts(s.now()), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errNotFound
	}
	return nil
}

const taskColumns = `id, task_number, title, description, origin_product, repository, github_integration, json_schema, assignee, created_at, updated_at`

func (s *store) scanTask(ctx context.Context, row interface{ Scan(...any) error }) (tasksapi.Task, error) {
	var (
		t                    tasksapi.Task
		number               int
		repo, schema, assign sql.NullString
		integration          sql.NullInt64
		created, updated     string
	)
	if err := row.Scan(&t.ID, &number, &t.Title, &t.Description, &t.OriginProduct, &repo, &integration, &schema, &assign, &created, &updated); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return t, errNotFound
		}
		return t, err
	}
	t.TaskNumber = &number
	t.Slug = fmt.Sprintf("TSK-%d", number)
	if repo.Valid {
		t.Repository = &repo.String
	}
	if integration.Valid {
		n := int(integration.Int64)
		t.GithubIntegration = &n
	}
	t.JSONSchema = json.RawMessage("null")
	if schema.Valid {
		t.JSONSchema = json.RawMessage(schema.String)
	}
	if assign.Valid {
		t.Assignee = &assign.String
	}
	t.CreatedAt, t.UpdatedAt = parseTS(created), parseTS(updated)
	latest, err := s.latestRun(ctx, t.ID)
	if err != nil && !errors.Is(err, errNotFound) {
		return t, err
	}
	if err == nil {
		t.LatestRun = &latest
	}
	return t, nil
}

func (s *store) getTask(ctx context.Context, id string) (tasksapi.Task, error) {
	return s.scanTask(ctx, s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = ? AND deleted = 0`, id))
}

type taskFilter struct {
	OriginProduct, Stage, Organization, Repository string
}

func (s *store) listTasks(ctx context.Context, f taskFilter, limit, offset int) ([]tasksapi.Task, int, error) {
	where, args := []string{"t.deleted = 0"}, []any{}
	if f.OriginProduct != "" {
		where, args = append(where, "t.origin_product = ?"), append(args, f.OriginProduct)
	}
	if f.Repository != "" {
		where, args = append(where, "t.repository = ?"), append(args, strings.ToLower(f.Repository))
	}
	if f.Organization != "" {
		where, args = append(where, "t.repository LIKE ? ESCAPE '\\'"), append(args, escapeLike(strings.ToLower(f.Organization))+"/%")
	}
	if f.Stage != "" {
		where = append(where, "(SELECT r.stage FROM runs r WHERE r.task_id = t.id ORDER BY r.created_at DESC, r.rowid DESC LIMIT 1) = ?")
		args = append(args, f.Stage)
	}
	cond := strings.Join(where, " AND ")
	var count int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tasks t WHERE `+cond, args...).Scan(&count); err != nil {
		return nil, 0, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+prefixed("t.", taskColumns)+` FROM tasks t WHERE `+cond+
		` ORDER BY t.created_at DESC, t.task_number DESC LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	if err != nil {
		return nil, 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		var skip [10]any
		ptrs := []any{&id}
		for i := range skip {
			ptrs = append(ptrs, &skip[i])
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return nil, 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	tasks := make([]tasksapi.Task, 0, len(ids))
	for _, id := range ids {
		t, err := s.getTask(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		tasks = append(tasks, t)
	}
	return tasks, count, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func prefixed(prefix, columns string) string {
	parts := strings.Split(columns, ", ")
	for i, p := range parts {
		parts[i] = prefix + p
	}
	return strings.Join(parts, ", ")
}

const runColumns = `id, task_id, stage, branch, status, environment, error_message, output, state, artifacts, created_at, updated_at, completed_at`

func scanRun(row interface{ Scan(...any) error }) (tasksapi.TaskRun, error) {
	var (
		r                                   tasksapi.TaskRun
		stage, branch, errMsg, output, done sql.NullString
		state, artifacts, created, updated  string
	)
	if err := row.Scan(&r.ID, &r.Task, &stage, &branch, &r.Status, &r.Environment, &errMsg, &output, &state, &artifacts, &created, &updated, &done); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return r, errNotFound
		}
		return r, err
	}
	if stage.Valid {
		r.Stage = &stage.String
	}
	if branch.Valid {
		r.Branch = &branch.String
	}
	if errMsg.Valid {
		r.ErrorMessage = &errMsg.String
	}
	if output.Valid {
		_ = json.Unmarshal([]byte(output.String), &r.Output)
	}
	_ = json.Unmarshal([]byte(state), &r.State)
	_ = json.Unmarshal([]byte(artifacts), &r.Artifacts)
	if r.State == nil {
		r.State = map[string]any{}
	}
	if r.Artifacts == nil {
		r.Artifacts = []tasksapi.ArtifactRecord{}
	}
	r.CreatedAt, r.UpdatedAt = parseTS(created), parseTS(updated)
	if done.Valid {
		t := parseTS(done.String)
		r.CompletedAt = &t
	}
	return r, nil
}

func (s *store) latestRun(ctx context.Context, taskID string) (tasksapi.TaskRun, error) {
	return scanRun(s.db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE task_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1`, taskID))
}

func (s *store) getRun(ctx context.Context, taskID, runID string) (tasksapi.TaskRun, error) {
	if _, err := s.getTask(ctx, taskID); err != nil {
		return tasksapi.TaskRun{}, err
	}
	return scanRun(s.db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ? AND task_id = ?`, runID, taskID))
}

func (s *store) createRun(ctx context.Context, taskID string, status tasksapi.Status, environment string, state map[string]any) (tasksapi.TaskRun, error) {
	if _, err := s.getTask(ctx, taskID); err != nil {
		return tasksapi.TaskRun{}, err
	}
	now := ts(s.now())
	id := uuid.NewString()
	_, err := s.db.ExecContext(ctx, `INSERT INTO runs (id, task_id, status, environment, state, artifacts, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?)`, id, taskID, status, environment, mustJSON(state), "[]", now, now)
	if err != nil {
		return tasksapi.TaskRun{}, err
	}
	if err := s.recordStatus(ctx, id, status); err != nil {
		return tasksapi.TaskRun{}, err
	}
	return s.getRun(ctx, taskID, id)
}

func (s *store) recordStatus(ctx context.Context, runID string, status tasksapi.Status) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO status_history (run_id, status, at) VALUES (?,?,?)`, runID, status, ts(s.now()))
	return err
}

func (s *store) listRuns(ctx context.Context, taskID string, limit, offset int) ([]tasksapi.TaskRun, int, error) {
	if _, err := s.getTask(ctx, taskID); err != nil {
		return nil, 0, err
	}
	var count int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM runs WHERE task_id = ?`, taskID).Scan(&count); err != nil {
		return nil, 0, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs WHERE task_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?`, taskID, limit, offset)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	runs := []tasksapi.TaskRun{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, 0, err
		}
		runs = append(runs, r)
	}
	return runs, count, rows.Err()
}

// runPatch is a validated PATCH of a run; nil fields are absent.
type runPatch struct {
	Status       *tasksapi.Status
	Branch       **string
	Stage        **string
	ErrorMessage **string
	Output       *map[string]any // non-nil pointer to nil map: set output to null
	State        map[string]any
}

func (s *store) patchRun(ctx context.Context, taskID, runID string, p runPatch) (tasksapi.TaskRun, error) {
	run, err := s.getRun(ctx, taskID, runID)
	if err != nil {
		return run, err
	}
	now := s.now()
	sets, args := []string{"updated_at = ?"}, []any{ts(now)}
	add := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
	if p.Status != nil {
		add("status", string(*p.Status))
		if p.Status.Terminal() {
			add("completed_at", ts(now))
		}
	}
	if p.Branch != nil {
		add("branch", derefOrNil(p.Branch))
	}
	if p.Stage != nil {
		add("stage", derefOrNil(p.Stage))
	}
	if p.ErrorMessage != nil {
		add("error_message", derefOrNil(p.ErrorMessage))
	}
	if p.Output != nil {
		if *p.Output == nil {
			add("output", nil)
		} else {
			merged := run.Output
			if merged == nil {
				merged = map[string]any{}
			}
			for k, v := range *p.Output {
				merged[k] = v
			}
			add("output", mustJSON(merged))
		}
	}
	if p.State != nil {
		merged := run.State
		for k, v := range p.State {
			merged[k] = v
		}
		add("state", mustJSON(merged))
	}
	args = append(args, runID)
	if _, err := s.db.ExecContext(ctx, `UPDATE runs SET `+strings.Join(sets, ", ")+` WHERE id = ?`, args...); err != nil {
		return run, err
	}
	if p.Status != nil {
		if err := s.recordStatus(ctx, runID, *p.Status); err != nil {
			return run, err
		}
	}
	return s.getRun(ctx, taskID, runID)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (s *store) appendLog(ctx context.Context, runID string, entries []json.RawMessage) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, e := range entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO log_entries (run_id, entry) VALUES (?, ?)`, runID, string(e)); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE runs SET updated_at = ? WHERE id = ?`, ts(s.now()), runID); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *store) logs(ctx context.Context, runID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT entry FROM log_entries WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *store) setArtifacts(ctx context.Context, runID string, manifest []tasksapi.ArtifactRecord) error {
	_, err := s.db.ExecContext(ctx, `UPDATE runs SET artifacts = ?, updated_at = ? WHERE id = ?`, mustJSON(manifest), ts(s.now()), runID)
	return err
}

// StatusChange is one status a run was set to.
type StatusChange struct {
	Status tasksapi.Status `json:"status"`
	At     time.Time       `json:"at"`
}

func (s *store) history(ctx context.Context, runID string) ([]StatusChange, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, at FROM status_history WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []StatusChange{}
	for rows.Next() {
		var c StatusChange
		var at string
		if err := rows.Scan(&c.Status, &at); err != nil {
			return nil, err
		}
		c.At = parseTS(at)
		out = append(out, c)
	}
	return out, rows.Err()
}
