/**
  Flake operations.
*/
{ lib }:
{

  inherit (builtins)
    parseFlakeRef
    flakeRefToString
    ;

}
