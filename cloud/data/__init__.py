"""Data files shipped with the cloud services (a package, so that the wheel
carries them): ``common_passwords.json``, read by :mod:`cloud.passwords`."""
