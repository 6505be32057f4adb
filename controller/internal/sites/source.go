package sites

import "context"

// Source supplies the configuration a plan compares against: a file now,
// the running controller later.
type Source interface {
	Current(ctx context.Context) (*Config, error)
}

// FileSource is a sites.yaml on disk.
type FileSource struct {
	Path string
}

// Current loads and validates the file.
func (f FileSource) Current(context.Context) (*Config, error) { return Load(f.Path) }

func (f FileSource) String() string { return f.Path }
