package devissuer

import (
	"github.com/flakegate/flakegate/internal/version"

	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/flakegate/flakegate/internal/identity/claimshape"
)

const usage = `devissuer: a LOCAL DEVELOPMENT token issuer for trying flakegate (NOT FOR PRODUCTION).

  devissuer init -dir DIR
      create the signing key and DIR/` + JWKSFile + ` (point an issuers-file entry's jwks_file at it)
  devissuer mint -dir DIR -issuer ISS -aud AUD (-github OWNER/REPO | -gitlab GROUP/PROJECT | -user NAME) [flags]
      print a signed token

mint flags:
`

// Main runs the command line; it returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = runInit(args[1:], stdout, stderr)
	case "mint":
		err = runMint(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.String())
		return 0
	default:
		err = fmt.Errorf("unknown command %q (want init or mint)", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "devissuer:", err)
		return 1
	}
	return 0
}

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".data/dev-issuer", "directory for the key and the JWKS file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := LoadOrCreate(*dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s/%s\n", *dir, JWKSFile)
	return nil
}

func runMint(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".data/dev-issuer", "directory holding the key (see init)")
	issuer := fs.String("issuer", "", "iss claim: must equal an issuers-file entry's issuer")
	aud := fs.String("aud", "", "aud claim: one of that entry's audience values")
	github := fs.String("github", "", "mint a GitHub-Actions-shaped token for this repository (owner/repo)")
	gitlab := fs.String("gitlab", "", "mint a GitLab-CI-shaped token for this project (group/project)")
	user := fs.String("user", "", "mint a user's OIDC token for this username")
	org := fs.String("org", "", "with -user: the user's org (the \"org\" claim)")
	ref := fs.String("ref", "refs/heads/main", "with -github: the git ref; with -gitlab: the branch name is taken from it")
	protected := fs.Bool("protected", true, "with -github/-gitlab: ref_protected")
	actor := fs.String("actor", "dev", "with -github/-gitlab: the user who triggered the job")
	lifetime := fs.Duration("lifetime", time.Hour, "token lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *issuer == "" || *aud == "" {
		return errors.New("mint needs -issuer and -aud")
	}
	var claims map[string]any
	switch {
	case *github != "" && *gitlab == "" && *user == "":
		claims = claimshape.GitHubActions(*github, *ref, *protected, *actor)
	case *gitlab != "" && *github == "" && *user == "":
		branch := *ref
		if len(branch) > len("refs/heads/") && branch[:len("refs/heads/")] == "refs/heads/" {
			branch = branch[len("refs/heads/"):]
		}
		claims = claimshape.GitLabCI(*gitlab, branch, *protected, *actor)
	case *user != "" && *github == "" && *gitlab == "":
		claims = claimshape.User(*user, *org)
	default:
		return errors.New("mint needs exactly one of -github, -gitlab, -user")
	}
	iss, err := LoadOrCreate(*dir)
	if err != nil {
		return err
	}
	tok, err := iss.Mint(*issuer, *aud, *lifetime, claims)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
