# Bay ship image (flavour `full`): commands that `pip install` puts in ~/.local/bin are on the
# PATH of every login shell (every shell command the ship runs), as Debian's ~/.profile would do.
if [ -d "$HOME/.local/bin" ]; then
    case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) PATH="$HOME/.local/bin:$PATH" ;;
    esac
fi
