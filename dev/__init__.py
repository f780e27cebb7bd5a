"""The dev stack and the Keycloak/Sumsub emulators. Not part of the installed distribution."""
