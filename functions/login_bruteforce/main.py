"""login_bruteforce: repeated failed logins from one address, to be blocked."""

from shared.function import event_function
from shared.schemas import LoginBruteforce

login_bruteforce = event_function(LoginBruteforce)
