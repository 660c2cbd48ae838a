-- Databases and roles for the homelab's services; runs once, when the data directory is empty.
CREATE DATABASE authentik;
CREATE DATABASE jjeco;
CREATE ROLE authentik LOGIN;
CREATE ROLE jjeco LOGIN;
GRANT ALL PRIVILEGES ON DATABASE authentik TO authentik;
GRANT ALL PRIVILEGES ON DATABASE jjeco TO jjeco;
