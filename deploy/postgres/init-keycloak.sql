-- The identity provider keeps its own data in a database of its own beside Ketnoi's.
CREATE DATABASE keycloak;
