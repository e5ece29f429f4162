# A configuration of services.flakegate as a user would write it, for one
# mode: the flake's checks evaluate it, and test/nixos runs the binaries with
# the arguments it produces.
{ mode }:
{
  services.flakegate = {
    enable = true;
    inherit mode;
    publicURL = "https://cache.example.com";
    blobserver.signingKeyFiles = [ "/run/secrets/flakegate-signing-key" ];
    authz.issuers = [
      {
        name = "github";
        issuer = "https://token.actions.githubusercontent.com";
        jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks";
        audience = [ "https://cache.example.com" ];
        claims = "github-actions";
      }
    ];
    authz.flakes."acme/release-tools" = {
      description = "Only the release managers pull it.";
      read.users = [ "alice" ];
    };
  };
}
